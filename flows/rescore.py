"""Re-scoring: every stored trajectory lacking a score for a student gets one (nothing already scored is redone),
then each student that got new scores has its dataset published under the policy configured for it.

rescore_student   one student (`rsr add-student`)
rescore_students  every registered student, or the given ones (the nightly schedule, `rsr.student.added`)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefect import flow

from rsr.config import RaySpec, ScoringSpec
from rsr.settings import StateDir
from rsr.spec import StudentSpec
from rsr.store.queries import Reader
from rsr_flows._artifacts import show_run
from rsr_flows._entry import StudentAdded, data_scope, parse_payload, student_input
from rsr_flows._run import recorded_run, state_dir
from rsr_flows.publish import publish_dataset
from rsr_flows.score import Scored, run_score_student
from rsr_tasks.decontaminate import decontaminate


@flow(name="rescore-student")
def rescore_student(
    student: StudentSpec,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    publish: bool = False,
    state: str | None = None,
    include_contaminated: bool = False,
) -> Scored:
    """`include_contaminated`: score (and publish) trajectories holding a benchmark problem too."""
    student = student_input(data_scope(), student)
    home = state_dir(state)
    with recorded_run(home, {"students": [student.ref]}) as run_id:
        decontaminate(home.duckdb, run_id)  # whatever a benchmark holds is known before anything is scored
        return shown(home, score_and_publish(home, run_id, [student], scoring, ray, publish, include_contaminated))[0]


@flow(name="rescore-students")
def rescore_students(
    students: list[StudentSpec] | None = None,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    publish: bool = True,
    state: str | None = None,
    event: str | None = None,
) -> list[Scored]:
    """`event`: an rsr.student.added payload as JSON text (the deployment trigger's one parameter): that student.
    Students given (not the registered ones) pass the data scope's checks before anything is read."""
    if event is not None:
        students = [StudentSpec(**parse_payload(StudentAdded, event, "rsr.student.added").model_dump())]
    scope = data_scope()
    students = [student_input(scope, s) for s in students or []]
    home = state_dir(state)
    specs = students or registered_students(home.duckdb)
    with recorded_run(home, {"students": [s.ref for s in specs]}) as run_id:
        decontaminate(home.duckdb, run_id)  # whatever a benchmark holds is known before anything is scored
        return shown(home, score_and_publish(home, run_id, specs, scoring, ray, publish))


def score_and_publish(
    home: StateDir, run_id: str, specs: list[StudentSpec], scoring, ray, publish: bool, include_contaminated=False
) -> list[Scored]:
    """Score each student; with `publish`, then publish (its result's `published`) each one that got new scores,
    under its own policy and name. Trajectories holding a benchmark problem are left out unless
    `include_contaminated`."""
    out = []
    for spec in specs:
        scored = run_score_student(home, run_id, spec, scoring, ray, include_contaminated)
        if publish and scored.scored:
            registered = spec.model_copy(update={"ref": scored.student_id})  # the one just scored, by its id
            published = publish_dataset(registered, name=spec.dataset_name(), state=str(home.root),
                                        include_contaminated=include_contaminated)  # fmt: skip
            scored = dataclasses.replace(scored, published=published)
        out.append(scored)
    return out


def shown(home: StateDir, scores: list[Scored]) -> list[Scored]:
    """`scores`, once this run's artifacts show them (flows/_artifacts.py)."""
    show_run(home, [s.student_id for s in scores], [s.published.publication for s in scores if s.published])
    return scores


def registered_students(db: Path) -> list[StudentSpec]:
    """Every student scored before, as registered (so a new teacher is scored for each of them), else the
    embedded default."""
    with Reader.open(db) as reader:
        rows = reader.students()
    specs: list[StudentSpec] = []
    for row in rows:
        if (spec := row.spec()) not in specs:
            specs.append(spec)
    return specs or [StudentSpec()]
