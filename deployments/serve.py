"""The deployments and their triggers in Python, and `rsr serve`: all of them served from one local process.

deployments/prefect.yaml declares the same three deployments for `prefect deploy` onto the `gpu` work pool;
tests/test_triggers_e2e.py checks that the two stay the same.

  curate-teacher    on `rsr.teacher.added`: ingest -> dedup -> verify -> score the new teacher for every student
                    (and publish for each, when the event says `publish: true`)
  rescore-students  nightly (cron) and on `rsr.student.added`: score what any registered (or the new) student
                    lacks, then publish for each student that got new scores, under its own policy and name
  publish           on demand (`prefect deployment run publish-dataset/publish -p ...`): select and publish
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployments.events import STUDENT_ADDED, TEACHER_ADDED

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events import DeploymentEventTrigger

    from rsr.config import RaySpec, StateDir

CURATE = "curate-teacher"
RESCORE = "rescore-students"
PUBLISH = "publish"
DEFAULT_RESCORE_CRON = "0 2 * * *"

# Deployment-trigger parameters are Jinja over the triggering event (and the Prefect objects it names). A value that
# is one `{{ expression }}` keeps its JSON type (null, bool, list, object), so optional keys default to null.
CURATE_PARAMETERS = {
    "teacher": "{{ event.payload.name }}",
    "path": "{{ event.payload.file }}",
    "format": "{{ event.payload.format | default(none) }}",
    "mapping": "{{ event.payload.mapping | default(none) }}",
    "problems": "{{ event.payload.problems | default(none) }}",
    "score": "{{ event.payload.score | default(true) }}",
    "publish": "{{ event.payload.publish | default(false) }}",
}
RESCORE_PARAMETERS = {
    "students": [
        {
            "ref": "{{ event.payload.ref }}",
            "dtype": "{{ event.payload.dtype | default('auto') }}",
            "chat_template": "{{ event.payload.chat_template | default(none) }}",
        }
    ]
}
def triggers() -> dict[str, list[DeploymentEventTrigger]]:
    """Each deployment's triggers (the same as in prefect.yaml)."""
    from prefect.events import DeploymentEventTrigger

    return {
        CURATE: [
            DeploymentEventTrigger(
                name="rsr-teacher-added",
                description="A new teacher's file: curate and score it.",
                expect={TEACHER_ADDED},
                match={"prefect.resource.id": "rsr.teacher.*"},
                parameters=CURATE_PARAMETERS,
            )
        ],
        RESCORE: [
            DeploymentEventTrigger(
                name="rsr-student-added",
                description="A new student: register it and score every stored trajectory for it.",
                expect={STUDENT_ADDED},
                match={"prefect.resource.id": "rsr.student.*"},
                parameters=RESCORE_PARAMETERS,
            )
        ],
    }


def build_deployments(
    state: StateDir,
    rescore_cron: str | None = DEFAULT_RESCORE_CRON,
    timezone: str = "UTC",
    ray: RaySpec | None = None,
) -> list[RunnerDeployment]:
    """The three deployments for this state folder (its path is every deployment's `state` parameter; `ray`,
    from `rsr serve --ray-address`, is the scoring flows' `ray` parameter)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.curate import curate_teacher
    from flows.publish import publish_dataset
    from flows.rescore import rescore_students

    base = {"state": str(state.root)}
    scoring = base | ({"ray": ray.model_dump()} if ray else {})
    trig = triggers()
    common = {"tags": ["rsr"], "entrypoint_type": EntrypointType.MODULE_PATH}
    return [
        curate_teacher.to_deployment(
            CURATE,
            parameters=scoring,
            triggers=trig[CURATE],
            description="On rsr.teacher.added: ingest, dedup, verify, score.",
            **common,
        ),
        rescore_students.to_deployment(
            RESCORE,
            parameters=scoring,
            triggers=trig[RESCORE],
            schedules=[Cron(rescore_cron, timezone=timezone)] if rescore_cron else None,
            description="Nightly and on rsr.student.added: score what each student lacks, publish what changed.",
            **common,
        ),
        publish_dataset.to_deployment(
            PUBLISH,
            parameters=base,
            description="On demand: select by policy and publish with lineage.",
            **common,
        ),
    ]


def serve(
    state: StateDir,
    rescore_cron: str | None = DEFAULT_RESCORE_CRON,
    timezone: str = "UTC",
    ray: RaySpec | None = None,
    limit: int = 1,
) -> None:
    """Register the deployments (and their automations) with the configured server and run their flow runs here,
    each in a subprocess, at most `limit` at a time, until interrupted."""
    import os

    from prefect import serve as prefect_serve

    # Flow runs are subprocesses that inherit this environment: their log is what an operator reads, not bars.
    for key in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    deployments = build_deployments(state, rescore_cron, timezone, ray)
    prefect_serve(*deployments, limit=limit)
