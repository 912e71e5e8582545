"""Ingest, deduplicate, verify: the CPU stages, each reading what the previous one stored (by id)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from rsr.dedup import find_duplicates
from rsr.ingest import ingest_file
from rsr.store import Store
from rsr.verify import verify_many


@task(name="ingest-teacher")
def ingest_teacher(
    db: Path,
    run_id: str,
    teacher: str,
    path: str,
    fmt: str | None = None,
    mapping: dict[str, str] | None = None,
    problems: str | None = None,
) -> dict:
    """Read one teacher's file into DuckDB; bad records go to quarantine, good ones are never lost."""
    result = ingest_file(path, teacher=teacher, fmt=fmt, mapping=mapping, problems=problems)
    with Store.open(db) as store:
        store.upsert_problems(result.problems)
        new = store.add_trajectories(result.trajectories, run_id)
        quarantined = store.add_rejected(result.rejected, run_id)
    return {
        "teacher": teacher,
        "path": str(path),
        "read": len(result.trajectories),
        "new": new,
        "quarantined": len(result.rejected),
        "quarantined_new": quarantined,
        "problem_ids": sorted({t.problem_id for t in result.trajectories}),
    }


@task(name="deduplicate")
def deduplicate(db: Path, run_id: str, problem_ids: list[str], threshold: float = 0.9) -> int:
    """Exact + near duplicates among all teachers' trajectories of these problems, first-ingested kept."""
    if not problem_ids:
        return 0
    with Store.open(db) as store:
        _, rows = store.query(
            """SELECT trajectory_id FROM trajectories WHERE list_contains(?, problem_id)
               ORDER BY ingested_at, teacher, source_file, source_line, trajectory_id""",
            [problem_ids],
        )
        trajectories = store.get_trajectories([r[0] for r in rows])
        duplicates = find_duplicates(trajectories, threshold=threshold)
        store.set_duplicates(duplicates, run_id)
    return len(duplicates)


@task(name="verify-answers")
def verify_answers(db: Path, run_id: str, timeout_s: float = 5.0) -> int:
    """Verdicts for every trajectory not yet verified (or whose gold answer arrived since)."""
    with Store.open(db) as store:
        trajectories = store.get_trajectories(store.unverified_ids())
        if trajectories:
            store.set_verdicts(verify_many(trajectories, timeout_s=timeout_s), run_id)
    return len(trajectories)
