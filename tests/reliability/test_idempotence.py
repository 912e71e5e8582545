"""Re-running any flow with the same inputs changes nothing: every content table keeps its rows, byte for byte.

The `runs` table is excluded on purpose: each flow run adds its own row (that is its job); the test checks those
rows separately. The published dataset folders are compared file by file as well.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.child_runs import CONTENT_TABLES, diff, snapshot


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def _runs(db: Path) -> list[tuple]:
    from rsr.store.queries import Reader

    with Reader.open(db) as store:
        return store.query("SELECT flow_name, status FROM runs ORDER BY started_at")[1]


@pytest.mark.slow
def test_every_flow_rerun_with_the_same_inputs_changes_nothing(scored_state):
    from rsr.config import PipelineConfig
    from rsr_flows.curate import curate_teacher
    from rsr_flows.pipeline import pipeline
    from rsr_flows.publish import publish_dataset
    from rsr_flows.rescore import rescore_student, rescore_students

    state, config_path = scored_state
    config = PipelineConfig.load(config_path)
    db = state / "rsr.duckdb"
    before = snapshot(db)
    for table in CONTENT_TABLES:  # every table holds something, so "unchanged" means something
        assert before[table], f"the template state has no {table} rows"
    datasets_before = _files(state / "datasets")
    runs_before = len(_runs(db))

    reruns = {
        "curate_teacher": lambda: [
            curate_teacher(
                t.name,
                t.path,
                format=t.format,
                mapping=t.mapping,
                problems=config.problems,
                dedup_threshold=config.dedup_threshold,
                verify_timeout_s=config.verify_timeout_s,
                state=str(state),
            )
            for t in config.teachers
        ],
        "rescore_students": lambda: rescore_students(state=str(state)),
        "rescore_student": lambda: [rescore_student(config.students[0], state=str(state))],
        "publish_dataset": lambda: publish_dataset(config.students[0], config.policy, config.output, state=str(state)),
        "pipeline": lambda: pipeline(str(config_path), state=str(state)),
    }
    changed = {}
    for name, rerun in reruns.items():
        result = rerun()
        if name == "curate_teacher":
            assert all(r.ingested.new == 0 and r.ingested.quarantined_new == 0 for r in result)
            assert all(s.scored == 0 for r in result for s in r.scores)
        if name.startswith("rescore_"):
            assert all(s.scored == 0 for s in result)
        changed.update({f"{name}: {t}": d for t, d in diff(before, snapshot(db)).items()})
    assert changed == {}, changed
    assert _files(state / "datasets") == datasets_before

    runs = _runs(db)
    # 3 curate + 2 rescore (the score-student subflow inside each is not a recorded run) + 1 publish
    # + pipeline (itself, 3 curate subflows, 1 publish subflow)
    assert len(runs) == runs_before + 3 + 2 + 1 + 5
    assert all(status == "completed" for _, status in runs)
