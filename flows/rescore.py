"""Re-scoring: every stored trajectory lacking a score for a student gets one (nothing already scored is redone),
then each student that got new scores has its dataset published under the policy configured for it.

rescore_student   one student (`rsr add-student`)
rescore_students  every registered student, or the given ones (the nightly schedule, `rsr.student.added`)
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows._run import recorded_run, state_dir
from flows.publish import publish_dataset
from flows.score import run_score_student
from rsr.config import RaySpec, ScoringSpec, StateDir, StudentSpec
from rsr.store import Store


@flow(name="rescore-student")
def rescore_student(
    student: StudentSpec,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    publish: bool = False,
    state: str | None = None,
) -> dict:
    home = state_dir(state)
    with recorded_run(home, {"students": [student.ref]}) as run_id:
        return score_and_publish(home, run_id, [student], scoring, ray, publish)[0]


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
    with recorded_run(home, {"students": [s.ref for s in specs]}) as run_id:
        return score_and_publish(home, run_id, specs, scoring, ray, publish)


def score_and_publish(home: StateDir, run_id: str, specs: list[StudentSpec], scoring, ray, publish: bool) -> list[dict]:
    """Score each student; with `publish`, then publish (its result's "published") each one that got new scores,
    under its own policy and name."""
    scored = [run_score_student(home, run_id, spec, scoring, ray) for spec in specs]
    for spec, result in zip(specs, scored, strict=True):
        result["published"] = publish_dataset(spec, state=str(home.root)) if publish and result["scored"] else None
    return scored


def registered_students(db: Path) -> list[StudentSpec]:
    """Every student scored before (so a new teacher is scored for all of them), else the embedded default."""
    with Store.open(db, read_only=True) as store:
        rows = store.students()
    specs = []
    for row in rows:
        info = row.info or {}
        kept = {k: info[k] for k in ("dtype", "chat_template", "policy", "output") if info.get(k) is not None}
        spec = StudentSpec(ref=row.ref, **kept)
        if spec not in specs:
            specs.append(spec)
    return specs or [StudentSpec()]
