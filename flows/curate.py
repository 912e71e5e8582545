"""curate_teacher: a new teacher's file through ingest -> dedup -> verify -> score, for every known student."""

from __future__ import annotations

from prefect import flow

from flows._run import recorded_run, state_dir
from flows.score import run_score_student
from rsr.config import RaySpec, ScoringSpec, StudentSpec
from rsr.store import Store
from tasks.curate import deduplicate, ingest_teacher, verify_answers


@flow(name="curate-teacher")
def curate_teacher(
    teacher: str,
    path: str,
    format: str | None = None,
    mapping: dict[str, str] | None = None,
    problems: str | None = None,
    score: bool = True,
    students: list[StudentSpec] | None = None,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    dedup_threshold: float = 0.9,
    verify_timeout_s: float = 5.0,
    state: str | None = None,
) -> dict:
    st = state_dir(state)
    params = {"teacher": teacher, "path": path, "format": format, "problems": problems, "score": score}
    with recorded_run(st, "curate-teacher", params) as run_id:
        ingested = ingest_teacher(st.duckdb, run_id, teacher, path, format, mapping, problems)
        ingested["duplicates"] = deduplicate(st.duckdb, run_id, ingested.pop("problem_ids"), dedup_threshold)
        ingested["verified"] = verify_answers(st.duckdb, run_id, verify_timeout_s)
        ingested["scores"] = []
        if score:
            for spec in students or registered_students(st.duckdb):
                ingested["scores"].append(run_score_student(st, run_id, spec, scoring, ray))
        return ingested


def registered_students(db) -> list[StudentSpec]:
    """Every student scored before (so a new teacher is scored for all of them), else the embedded default."""
    with Store.open(db) as store:
        rows = store.students()
    specs = []
    for row in rows:
        info = row.info or {}
        spec = StudentSpec(ref=row.ref, dtype=info.get("dtype", "auto"), chat_template=info.get("chat_template"))
        if spec not in specs:
            specs.append(spec)
    return specs or [StudentSpec()]
