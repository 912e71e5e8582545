"""`rsr add-teacher --no-score` then `rsr add-student` inline: the student scores what is stored, once."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from rsr.cli import app
from rsr.store.queries import Reader
from rsr.store.writer import Store


def test_add_student_scores_every_stored_trajectory_once(tmp_path, state_dir):
    src = tmp_path / "tutor.jsonl"
    problems = [("What is 2 + 3?", "5"), ("What is 4 * 6?", "24"), ("What is 10 - 7?", "3")]
    rows = [
        {
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": f"So the answer is \\boxed{{{a}}}."},
            ]
        }
        for q, a in problems
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()

    added = runner.invoke(app, ["add-teacher", "tutor", str(src), "--format", "messages", "--no-score"])
    assert added.exit_code == 0, added.output
    first = runner.invoke(app, ["add-student", "smollm2-135m", "--dtype", "float32"])
    assert first.exit_code == 0, first.output
    assert "scored 3 trajectories" in first.output
    again = runner.invoke(app, ["add-student", "smollm2-135m", "--dtype", "float32"])
    assert again.exit_code == 0, again.output
    assert "scored 0 trajectories" in again.output  # keyed: nothing is scored twice

    with Reader.open(state_dir / "rsr.duckdb") as store:
        _, [(n, flows)] = store.query(
            "SELECT (SELECT count(*) FROM scores WHERE error IS NULL), "
            "(SELECT count(*) FROM runs WHERE flow_name = 'rescore-student' AND status = 'completed')"
        )
    assert (n, flows) == (3, 2)

    # A row as scored before the companion metrics existed (schema v10) keeps NULL ... until asked to fill it in.
    db = state_dir / "rsr.duckdb"
    with Store.open(db) as store:
        _, [(sid, rsr, entropy, top1)] = store.query(
            "SELECT score_id, rsr, mean_entropy, top1_share FROM scores ORDER BY score_id LIMIT 1"
        )
        store.query("UPDATE scores SET sum_entropy = NULL, mean_entropy = NULL, n_top1 = NULL, top1_share = NULL "
                    "WHERE score_id = ?", [sid])  # fmt: skip
    filled = runner.invoke(app, ["add-student", "smollm2-135m", "--dtype", "float32", "--fill-metrics"])
    assert filled.exit_code == 0, filled.output
    assert "scored 0 trajectories" in filled.output and "filled in on 1 of 1 older rows" in filled.output
    with Reader.open(db) as store:
        _, rows = store.query("SELECT score_id, rsr, mean_entropy, top1_share FROM scores WHERE score_id = ?", [sid])
        _, [(left,)] = store.query("SELECT count(*) FROM scores WHERE mean_entropy IS NULL")
    assert rows == [(sid, rsr, entropy, top1)] and left == 0  # the same row, its RSR untouched, the metrics back


def test_deepseek_api_reasoning_under_a_rewriting_template_is_scored_and_published_to_train_on(
    tmp_path, state_dir, shared_data
):
    """Reasoning in `reasoning_content` is joined into the response; a student whose template drops it (QwQ's)
    scores it as generated, and the published rows carry the prompt/completion text that was scored."""
    src = tmp_path / "deepseek.jsonl"
    rows = [
        {
            "id": f"q{i}",
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": f"The answer is \\boxed{{{a}}}.", "reasoning_content": f"{q} is {a}."},
            ],
            "answer": a,
        }
        for i, (q, a) in enumerate([("What is 2 + 3?", "5"), ("What is 4 * 6?", "24")])
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = str(shared_data / "chat-templates" / "QwQ-32B.jinja")
    runner = CliRunner()
    added = runner.invoke(app, ["add-teacher", "deepseek", str(src), "--no-score"])
    assert added.exit_code == 0, added.output
    scored = runner.invoke(app, ["add-student", "smollm2-135m", "--dtype", "float32", "--chat-template", template])
    assert scored.exit_code == 0, scored.output
    assert "scored 2 trajectories" in scored.output
    assert "note: smollm2-135m: this chat template drops" in scored.output  # said plainly
    with Reader.open(state_dir / "rsr.duckdb") as store:
        _, got = store.query("SELECT render, n_reasoning_tokens, n_answer_tokens, n_tokens FROM latest_scores")
    assert len(got) == 2 and all(r == "generation" and nr > 0 and na > 0 and nr + na == n for r, nr, na, n in got)

    out = runner.invoke(
        app, ["publish", "--student", "smollm2-135m", "--dtype", "float32", "--chat-template", template]
    )
    assert out.exit_code == 0, out.output
    folder = Path(out.output.split(" to ")[1].split(" (")[0])
    published = [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()]
    for row in published:
        assistant = row["messages"][-1]["content"]
        assert assistant.startswith("<think>\n") and "</think>\n\nThe answer is" in assistant  # nothing lost
        assert row["prompt"].endswith("<|im_start|>assistant\n<think>\n")  # QwQ's generation prompt opens it
        assert row["completion"] == assistant.removeprefix("<think>\n") + "<|im_end|>\n"
    card = (folder / "README.md").read_text()
    assert "Train on the `prompt` and `completion` columns" in card and "rewrites assistant text" in card


def test_add_teacher_names_quarantine_reasons_and_missing_golds_and_fails_on_nothing(tmp_path, state_dir):
    good = {"conversations": [{"from": "human", "value": "What is 1 + 1?"}, {"from": "gpt", "value": "2"}]}
    bad = {"conversations": [{"from": "robot", "value": "?"}]}
    src = tmp_path / "stratos.jsonl"
    src.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n" + json.dumps(bad) + "\n")
    runner = CliRunner()
    out = runner.invoke(app, ["add-teacher", "stratos", str(src), "--no-score"])
    assert out.exit_code == 0, out.output
    assert "3 records = 1 read + 0 repeats + 2 quarantined; 1 new" in out.output
    assert f"quarantined 2 x, e.g. {src}:2: message 0 has unknown from 'robot'" in out.output
    assert "1 of 1 trajectories have no gold answer" in out.output and "--include-unverified" in out.output

    nothing = tmp_path / "bad.jsonl"
    nothing.write_text(json.dumps(bad) + "\n")
    out = runner.invoke(app, ["add-teacher", "broken", str(nothing), "--no-score"])
    assert out.exit_code == 2
    assert "no trajectory read for teacher 'broken'" in out.output and "unknown from 'robot'" in out.output
    with Reader.open(state_dir / "rsr.duckdb") as store:
        _, [(n,)] = store.query("SELECT count(*) FROM quarantine WHERE source_file = ?", [str(nothing)])
    assert n == 1  # kept for inspection
