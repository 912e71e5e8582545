"""`rsr add-benchmark` after `rsr add-teacher --no-score`, in process: every stored trajectory is checked, the flagged
one is counted per teacher and benchmark, `rsr status` lists the benchmark, a student scores all but the flagged one,
and bad input is one line each."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rsr.cli import app
from rsr.store.queries import Reader

LEAKED = "Maria reads 25 pages every weekday and 40 pages on each day of the weekend. How many pages in two weeks?"


def test_add_benchmark_flags_stored_trajectories_and_refuses_bad_input(tmp_path, state_dir):
    src = tmp_path / "tutor.jsonl"
    prompts = [LEAKED.replace("25", "20").replace("40", "35"), "What is 2 + 3?", "How many legs do 3 spiders have?"]
    src.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p},
                                                    {"role": "assistant", "content": "The answer is 5."}]}) + "\n"
                           for p in prompts))  # fmt: skip
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": LEAKED}) + "\n" + json.dumps({"question": "How many edges has a cube?"}))
    runner = CliRunner()
    assert runner.invoke(app, ["add-teacher", "tutor", str(src), "--no-score"]).exit_code == 0

    out = runner.invoke(app, ["add-benchmark", "mine", str(bench)])
    assert out.exit_code == 0, out.output
    assert f"benchmark mine: 2 problems from {bench} (column question, digest " in out.output
    assert "n 8): added" in out.output and "checked 3 trajectories (3 distinct prompts)" in out.output
    assert "decontaminate: tutor: trajectories holding a benchmark problem (mine: 1)" in out.output
    again = runner.invoke(app, ["add-benchmark", "mine", str(bench)])
    assert "already registered with this content: nothing changed" in again.output
    assert "checked 0 trajectories" in again.output
    status = runner.invoke(app, ["status"])
    assert "benchmark mine: 2 problems from" in status.output and "trajectories holding one: 1" in status.output
    with Reader.open(state_dir / "rsr.duckdb") as reader:
        assert reader.query("SELECT teacher, benchmark, benchmark_row, method FROM contamination")[1] == [
            ("tutor", "mine", 1, "ngram_numbers")
        ]
    scored = runner.invoke(app, ["add-student", "smollm2-135m", "--dtype", "float32"])
    assert "scored 2 trajectories" in scored.output, scored.output  # not the flagged one (queries: integration test)

    no_column = tmp_path / "q.jsonl"
    no_column.write_text(json.dumps({"q": LEAKED, "solution": "x"}) + "\n")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"problem": "Something else."}) + "\n")
    for args, said in [
        (["add-benchmark", "cols", str(no_column)], "its records have q, solution; name one: --map problem=COLUMN"),
        (["add-benchmark", "mine", str(other)], "'mine' is registered with other content"),
        (["add-benchmark", "x", str(bench), "--map", "answer=solution"], "--map takes problem=COLUMN only"),
        (["add-benchmark", "aime24"], "'HuggingFaceH4/aime_2024' cannot be read here (HF_HUB_OFFLINE is set)"),
    ]:
        bad = runner.invoke(app, args)
        assert bad.exit_code == 2 and said in bad.output, bad.output
        assert bad.output.count("error:") == 1
