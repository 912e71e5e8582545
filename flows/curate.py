"""curate_teacher: a new teacher's file through ingest -> dedup -> verify -> score, for every known student."""

from __future__ import annotations

from prefect import flow

from flows._run import recorded_run, state_dir
from flows.rescore import registered_students, score_and_publish
from rsr.config import RaySpec, ScoringSpec, StudentSpec
from tasks.curate import deduplicate, ingest_teacher, verify_answers


@flow(name="curate-teacher")
def curate_teacher(
    teacher: str,
    path: str,
    format: str | None = None,
    mapping: dict[str, str] | None = None,
    problems: str | None = None,
    hf_options: dict[str, str] | None = None,
    score: bool = True,
    publish: bool = False,
    students: list[StudentSpec] | None = None,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    dedup_threshold: float = 0.9,
    verify_timeout_s: float = 5.0,
    state: str | None = None,
) -> dict:
    """`publish`: then publish each student's dataset that the new teacher's scores changed (off by default; each
    score's "published")."""
    home = state_dir(state)
    params = {"teacher": teacher, "path": path, "format": format, "problems": problems, "score": score}
    with recorded_run(home, params) as run_id:
        # Submitted with wait_for so that Prefect's graph shows the DAG's edges; each stage reads the last one's rows.
        ingest = ingest_teacher.submit(home.duckdb, run_id, teacher, path, format, mapping, problems, hf_options)
        ingested = ingest.result()
        problem_ids = ingested.pop("problem_ids")
        dedup = deduplicate.submit(home.duckdb, run_id, problem_ids, dedup_threshold, wait_for=[ingest])
        verify = verify_answers.submit(home.duckdb, run_id, verify_timeout_s, wait_for=[dedup])
        ingested["duplicates"], ingested["verified"] = dedup.result(), verify.result()
        specs = (students or registered_students(home.duckdb)) if score else []
        ingested["scores"] = score_and_publish(home, run_id, specs, scoring, ray, publish)
        return ingested
