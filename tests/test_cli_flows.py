"""`rsr add-teacher --no-score` then `rsr add-student` inline: the student scores what is stored, once."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rsr.cli import app
from rsr.store import Store


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

    with Store.open(state_dir / "rsr.duckdb", read_only=True) as store:
        _, [(n, flows)] = store.query(
            "SELECT (SELECT count(*) FROM scores WHERE error IS NULL), "
            "(SELECT count(*) FROM runs WHERE flow_name = 'rescore-student' AND status = 'completed')"
        )
    assert (n, flows) == (3, 2)
