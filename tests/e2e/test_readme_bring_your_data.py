"""Every command of the README's "Bring your data" runs as printed (--map with several pairs after one flag), on
a small file of its schema (tests/support/schemas.py): exit 0, the format and columns said, counts that add up."""

from __future__ import annotations

import json
import re
import shlex

from typer.testing import CliRunner

from rsr.cli import app
from rsr.store.queries import Reader
from tests.support.schemas import write_readme_file
from tests.support.shared_data import REPO


def readme_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Bring your data", 1)[1].split("\n## ", 1)[0]
    commands = [shlex.split(c) for c in re.findall(r"`(rsr add-teacher [^`]+)`", section)]
    return [c for c in commands if "hf" not in c]  # the hub dataset needs the network


def test_every_bring_your_data_command_runs_as_printed(tmp_path, state_dir):
    commands = readme_commands()
    assert len(commands) >= 17 and any(c.count("--map") == 1 and len(c) > 6 for c in commands)
    runner = CliRunner()
    for command in commands:
        path = write_readme_file(tmp_path, command[3])
        args = [*command[1:3], str(path), *command[4:], "--no-score"]
        out = runner.invoke(app, args)
        assert out.exit_code == 0, f"{shlex.join(command)}\n{out.output}"
        assert re.search(r"\d+ records = \d+ read \+ \d+ repeats \+ \d+ quarantined", out.output), out.output
        assert f"read {path}: format " in out.output, out.output
        for pair in command[command.index("--map") + 1 :] if "--map" in command else []:
            field, column = pair.split("=")
            assert f"{field} <- {column}" in out.output, (pair, out.output)
    with Reader.open(state_dir / "rsr.duckdb") as store:
        log = store.ingest_log()
    assert len(log) == len(commands)
    assert all(r.records == r.stored + r.repeats + r.quarantined for r in log)
    assert {r.source.rsplit("/", 1)[-1]: r.repeats for r in log}["out.csv"] == 1  # an exact repeat row, counted


def test_map_pairs_repeated_flags_and_a_stray_argument(tmp_path, state_dir):
    path = tmp_path / "t.jsonl"
    path.write_text('{"q": "What is 1 + 1?", "r": "2", "gold": {"v": "2"}, "answer": "9"}\n', encoding="utf-8")
    runner = CliRunner()
    out = runner.invoke(app, ["add-teacher", "t", str(path), "--map", "problem=q", "--map", "response=r",
                              "answer=gold.v", "--no-score"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "problem <- q, response <- r, answer <- gold.v" in out.output
    with Reader.open(state_dir / "rsr.duckdb") as store:
        _, [(params, gold)] = store.query(
            "SELECT r.params, t.gold_answer FROM runs r JOIN trajectories t USING (run_id)"
        )
    (read_as,) = json.loads(params)["read_as"].values()
    assert read_as["format"] == "table" and read_as["fields"]["answer"] == "gold.v" and gold == "2"
    stray = runner.invoke(app, ["add-teacher", "t", str(path), "oops", "--no-score"])
    assert stray.exit_code == 2 and "unexpected argument(s) oops" in stray.output
