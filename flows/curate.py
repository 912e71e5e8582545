"""curate_teacher: a new teacher's file through ingest -> dedup -> verify -> score, for every known student."""

from __future__ import annotations

from prefect import flow

from flows._run import recorded_run, state_dir
from flows.publish import publish_rescored
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
    publish: bool = False,
    students: list[StudentSpec] | None = None,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    dedup_threshold: float = 0.9,
    verify_timeout_s: float = 5.0,
    state: str | None = None,
) -> dict:
    """`publish`: then publish each student's dataset that the new teacher's scores changed (off by default)."""
    home = state_dir(state)
    params = {"teacher": teacher, "path": path, "format": format, "problems": problems, "score": score}
    with recorded_run(home, params) as run_id:
        # Submitted with wait_for so that Prefect's graph shows the DAG's edges; each stage reads the last one's rows.
        ingest = ingest_teacher.submit(home.duckdb, run_id, teacher, path, format, mapping, problems)
        ingested = ingest.result()
        problem_ids = ingested.pop("problem_ids")
        dedup = deduplicate.submit(home.duckdb, run_id, problem_ids, dedup_threshold, wait_for=[ingest])
        verify = verify_answers.submit(home.duckdb, run_id, verify_timeout_s, wait_for=[dedup])
        ingested["duplicates"], ingested["verified"] = dedup.result(), verify.result()
        ingested["scores"] = ingested["published"] = []
        if score:
            specs = students or registered_students(home.duckdb)
            ingested["scores"] = [run_score_student(home, run_id, spec, scoring, ray) for spec in specs]
            if publish:
                ingested["published"] = publish_rescored(specs, ingested["scores"], home)
        return ingested


def registered_students(db) -> list[StudentSpec]:
    """Every student scored before (so a new teacher is scored for all of them), else the embedded default."""
    with Store.open(db, read_only=True) as store:
        rows = store.students() if db.exists() else []
    specs = []
    for row in rows:
        info = row.info or {}
        kept = {k: info[k] for k in ("chat_template", "policy", "output") if info.get(k) is not None}
        spec = StudentSpec(ref=row.ref, dtype=info.get("dtype", "auto"), **kept)
        if spec not in specs:
            specs.append(spec)
    return specs or [StudentSpec()]
