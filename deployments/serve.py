"""`rsr serve`'s deployments: those that deployments/prefect.yaml declares, for one state folder.

prefect.yaml is their one definition (flows, descriptions, triggers, the nightly schedule): `prefect deploy` sends
them to the `gpu` work pool, `rsr serve` builds them here with this state folder and its own cron
(what each one does: docs/deployments.md).
"""

from __future__ import annotations

import inspect
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events import DeploymentEventTrigger

    from rsr.config import RaySpec
    from rsr.settings import StateDir

PREFECT_YAML = Path(__file__).with_name("prefect.yaml")


@cache
def declared() -> dict[str, dict]:
    """prefect.yaml's deployments by name."""
    return {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))["deployments"]}


DEFAULT_RESCORE_CRON = declared()["rescore-students"]["schedules"][0]["cron"]
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


def build_deployments(
    state: StateDir,
    rescore_cron: str | None = DEFAULT_RESCORE_CRON,
    timezone: str = "UTC",
    ray: RaySpec | None = None,
) -> list[RunnerDeployment]:
    """The deployments for this state folder (its path is every deployment's `state` parameter; `ray`, from
    `rsr serve --ray-address`, is the scoring flows' `ray` parameter; `rescore_cron` replaces the YAML's cron)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron

    deployments = []
    for name, d in declared().items():
        flow = load_flow_from_entrypoint(d["entrypoint"])
        parameters = {"state": str(state.root)}
        if ray and "ray" in inspect.signature(flow.fn).parameters:
            parameters["ray"] = ray.model_dump()
        deployments.append(
            flow.to_deployment(
                name,
                parameters=parameters,
                triggers=triggers().get(name),
                schedules=[Cron(rescore_cron, timezone=timezone)] if rescore_cron and d.get("schedules") else None,
                description=d["description"],
                tags=d["tags"],
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments
