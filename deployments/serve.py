"""`rsr serve`: the deployments that deployments/prefect.yaml declares, for one state folder, served from this process.

prefect.yaml is their one definition (flows, descriptions, triggers, the nightly schedule): `prefect deploy` sends
them to the `gpu` work pool, `rsr serve` builds them here with this state folder (what each one does:
docs/deployments.md). Serving adds what a person following the runs needs: each run sends heartbeats and one
whose process died is retried (recovery.py), each run's start and end is one line on the terminal (runs.py,
logs.py), and the schedules set through Prefect are left as they are (`nightly_schedule`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from rsr_deployments import SERVE_LOG

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events import DeploymentEventTrigger

    from rsr.config import RaySpec
    from rsr.settings import StateDir

PREFECT_YAML = Path(__file__).with_name("prefect.yaml")
LOGGING_YML = Path(__file__).with_name("logging.yml")


@cache
def declared() -> dict[str, dict]:
    """prefect.yaml's deployments by name."""
    return {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))["deployments"]}


DEFAULT_RESCORE_CRON = declared()["rescore-students"]["schedules"][0]["cron"]
NIGHTLY = declared()["rescore-students"]["schedules"][0]["slug"]  # rsr's own schedule: what --rescore-cron changes
# Deployment-trigger parameters are Jinja over the triggering event (and the Prefect objects it names). A value that
# is one `{{ expression }}` keeps its JSON type (null, bool, list, object), so optional keys default to null.
CURATE_PARAMETERS = declared()["curate-teacher"]["triggers"][0]["parameters"]
RESCORE_PARAMETERS = declared()["rescore-students"]["triggers"][0]["parameters"]


def triggers() -> dict[str, list[DeploymentEventTrigger]]:
    """Each triggered deployment's triggers."""
    from prefect.events import DeploymentEventTrigger

    return {
        name: [DeploymentEventTrigger.model_validate(t) for t in d["triggers"]]
        for name, d in declared().items()
        if d.get("triggers")
    }


def build_deployments(state: StateDir, ray: RaySpec | None = None) -> list[RunnerDeployment]:
    """The deployments for this state folder (its path is every deployment's `state` parameter; `ray`, from
    `rsr serve --ray-*`, is the scoring flows' `ray` parameter). They carry no schedule: the server keeps the ones
    it has (`nightly_schedule`)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.flows import load_flow_from_entrypoint

    from rsr_deployments.recovery import SERVED_TAG

    deployments = []
    for name, d in declared().items():
        flow = load_flow_from_entrypoint(d["entrypoint"])
        parameters = {"state": str(state.root)}
        if ray and "ray" in inspect.signature(flow.fn).parameters:
            parameters["ray"] = ray.model_dump()
        deployment = flow.to_deployment(
            name,
            parameters=parameters,
            triggers=triggers().get(name),
            description=d["description"],
            tags=[*d["tags"], SERVED_TAG],  # the heartbeat rule (recovery.py) watches these runs only
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        # to_deployment sets `schedules: []`, which an update sends and the server takes as "no schedule": unset,
        # the field is left out of the update, and the schedules on the server stay.
        deployment.schedules = None
        deployment.model_fields_set.discard("schedules")
        deployments.append(deployment)
    return deployments


def nightly_schedule(client, deployment_id, cron: str | None, timezone: str, new: bool) -> str:  # noqa: ANN001
    """rsr's own schedule of the rescore (slug NIGHTLY), and what became of it. `cron` None: the schedules on the
    server stay as they are (set with `prefect deployment schedule`, the UI or an earlier `rsr serve`), and a new
    deployment gets prefect.yaml's cron; a cron: ours is set to it; "": ours is removed. Other schedules stay."""
    from prefect.client.schemas.schedules import CronSchedule

    ours = [s for s in client.read_deployment_schedules(deployment_id) if s.slug == NIGHTLY]
    cron = DEFAULT_RESCORE_CRON if cron is None and new else cron
    if cron is None:
        return "the schedules on the server are kept"
    if not cron:
        for schedule in ours:
            client.delete_deployment_schedule(deployment_id, schedule.id)
        return "no nightly schedule of rsr's (schedules set through Prefect are kept)"
    schedule = CronSchedule(cron=cron, timezone=timezone)
    if ours:
        client.update_deployment_schedule(deployment_id, ours[0].id, schedule=schedule, active=True)
    else:
        client.create_deployment_schedules(deployment_id, [(schedule, True)], slug=NIGHTLY)
    return f"nightly rescore at {cron} ({timezone})"


def serve_log(state: StateDir) -> Path:
    """The session's log file, and Prefect's logging pointed at logging.yml (in this process and each flow run it
    starts). Call before Prefect is imported: it reads its logging settings then."""
    folder = state.root / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rsr-serve-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    os.environ.setdefault("PREFECT_LOGGING_SETTINGS_PATH", str(LOGGING_YML))
    os.environ[SERVE_LOG] = str(path)
    return path


def serve(state: StateDir, settings: Served, say: Callable[[str], None]) -> None:
    """Register the deployments, mark crashed and retry what died before, then run flow runs until interrupted."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, TerminationSignal
    from prefect.runner import Runner

    from rsr_deployments.recovery import HEARTBEAT_S, interrupted_runs, register_crash_automation, sweep
    from rsr_deployments.runs import Follower

    runner = Runner(limit=settings.limit, heartbeat_seconds=HEARTBEAT_S)
    served: dict = {}
    with get_client(sync_client=True) as client:
        for deployment in build_deployments(state, settings.ray):
            try:
                client.read_deployment_by_name(deployment.full_name)
                new = False
            except ObjectNotFound:
                new = True
            deployment_id = runner.add_deployment(deployment)
            served[deployment_id] = deployment.name
            if deployment.name == "rescore-students":
                say(nightly_schedule(client, deployment_id, settings.cron, settings.timezone, new))
        register_crash_automation(client)
        for line in sweep(client, served, interrupted_runs(state)):  # before the runner takes new work
            say(line)
    Follower(served, say, os.environ.get(SERVE_LOG)).start()
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as stop:
        say(f"stopped ({type(stop).__name__}); the deployments are paused until `rsr serve` runs again")


@dataclass(frozen=True)
class Served:
    """How `rsr serve` serves: its rescore cron (None: keep the server's), flow runs at a time, Ray settings."""

    cron: str | None = None
    timezone: str = "UTC"
    limit: int = 1
    ray: RaySpec | None = None
