"""The events that start the curation flows, and how `rsr add-teacher/add-student/add-benchmark --async` send them.

An event goes to a Prefect server; an automation there (a deployment trigger, see serve.py and prefect.yaml) turns it
into a flow run that `rsr serve` or a `gpu` work-pool worker executes. The temporary server that each `rsr` command
starts on its own dies with the command, so `--async` needs a real one: PREFECT_API_URL.
"""

from __future__ import annotations

import asyncio
from typing import Any

TEACHER_ADDED = "rsr.teacher.added"
STUDENT_ADDED = "rsr.student.added"
BENCHMARK_ADDED = "rsr.benchmark.added"

NO_API = (
    "no Prefect server is configured (PREFECT_API_URL is unset). `rsr serve` and `--async` need a running one: "
    "the temporary server each `rsr` command starts cannot pass events from one process to another. "
    "Start one with `prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api` in the shell "
    "running `rsr serve` and in the one sending events (or drop --async to run the flow here)."
)


class NoPrefectApi(RuntimeError):
    """No Prefect server is configured or it does not answer."""


def require_api() -> str:
    """The configured Prefect API URL, checked to answer; else NoPrefectApi saying what to do."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise NoPrefectApi(NO_API)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
    if error is not None:
        raise NoPrefectApi(
            f"PREFECT_API_URL={url} does not answer ({type(error).__name__}: {error}). "
            "Is `prefect server start` running there?"
        )
    return url


def emit(event: str, name: str, payload: dict[str, Any]) -> str:
    """Send `rsr.<kind>.added` about the resource `rsr.<kind>.<name>` (what its trigger matches) and return its id.
    The payload's keys are the trigger's (prefect.yaml); paths in it must be readable where the flow runs.

    We use the events client directly rather than `prefect.events.emit_event`: that one queues the event on a
    background worker and logs (does not raise) a failed delivery, and a CLI must say whether its event left.
    """
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    require_api()
    resource = {"prefect.resource.id": f"{event.removesuffix('.added')}.{name}", "prefect.resource.name": name}
    ev = Event(event=event, resource=resource, payload=payload)

    async def send() -> None:
        async with get_events_client(reconnection_attempts=2) as client:
            await client.emit(ev)

    asyncio.run(send())
    return str(ev.id)
