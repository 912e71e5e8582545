"""Re-scoring: every stored trajectory lacking a score for a student gets one (nothing already scored is redone).

rescore_student   one student (`rsr add-student`)
rescore_students  every registered student, or the given ones (the nightly schedule, `rsr.student.added`)
"""

from __future__ import annotations

from prefect import flow

from flows._run import recorded_run, state_dir
from flows.curate import registered_students
from flows.score import run_score_student
from rsr.config import RaySpec, ScoringSpec, StudentSpec


@flow(name="rescore-student")
def rescore_student(
    student: StudentSpec,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    state: str | None = None,
) -> dict:
    st = state_dir(state)
    with recorded_run(st, "rescore-student", {"students": [student.ref]}) as run_id:
        return run_score_student(st, run_id, student, scoring, ray)


@flow(name="rescore-students")
def rescore_students(
    students: list[StudentSpec] | None = None,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    state: str | None = None,
) -> list[dict]:
    st = state_dir(state)
    specs = list(students or []) or registered_students(st.duckdb)
    with recorded_run(st, "rescore-students", {"students": [s.ref for s in specs]}) as run_id:
        return [run_score_student(st, run_id, spec, scoring, ray) for spec in specs]
