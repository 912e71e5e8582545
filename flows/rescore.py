"""Re-scoring: every stored trajectory lacking a score for a student gets one (nothing already scored is redone),
then each student that got new scores has its dataset published under the policy configured for it.

rescore_student   one student (`rsr add-student`)
rescore_students  every registered student, or the given ones (the nightly schedule, `rsr.student.added`)
"""

from __future__ import annotations

from prefect import flow

from flows._run import recorded_run, state_dir
from flows.curate import registered_students
from flows.publish import publish_rescored
from flows.score import run_score_student
from rsr.config import RaySpec, ScoringSpec, StateDir, StudentSpec


@flow(name="rescore-student")
def rescore_student(
    student: StudentSpec,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    publish: bool = False,
    state: str | None = None,
) -> dict:
    return _rescore(state_dir(state), [student], scoring, ray, publish)[0]


@flow(name="rescore-students")
def rescore_students(
    students: list[StudentSpec] | None = None,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    publish: bool = True,
    state: str | None = None,
) -> list[dict]:
    home = state_dir(state)
    specs = list(students or []) or registered_students(home.duckdb)
    return _rescore(home, specs, scoring, ray, publish)


def _rescore(home: StateDir, specs: list[StudentSpec], scoring, ray, publish: bool) -> list[dict]:
    with recorded_run(home, {"students": [s.ref for s in specs]}) as run_id:
        scored = [run_score_student(home, run_id, spec, scoring, ray) for spec in specs]
        published = publish_rescored(specs, scored, home) if publish else [None] * len(specs)
        for result, pub in zip(scored, published, strict=True):
            result["published"] = pub
        return scored
