"""Following runs on the Prefect server: the run an `--async` event started (its id and UI link), and what
`rsr serve` prints about the runs of its deployments (one line each time one starts or ends; a failure's cause
without its traceback, which stays in the log file) while it retries those whose process died (recovery.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from rsr_deployments.logs import one_line
from rsr_deployments.recovery import NOT_RETRIED, sweep

log = logging.getLogger(__name__)
POLL_S = 5.0  # how often `rsr serve` looks at its runs
RUN_WAIT_S = 30.0  # how long `--async` waits for the server to start a run for its event (it takes a second or two)
RECENT = 50  # the most recent runs of its deployments it follows


def run_link(run_id: UUID | str) -> str:
    """The run's page in the Prefect UI (PREFECT_UI_URL, else derived from PREFECT_API_URL)."""
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui else ""


def run_started_by(event_id: str, timeout_s: float):  # noqa: ANN201 (FlowRun; prefect is imported lazily)
    """The flow run that a deployment trigger created for this event, or None if none did within `timeout_s`.
    The server says so in its `prefect.automation.action.executed` event, related to the triggering event."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter

    now = datetime.now(UTC)  # `until` defaults to when the filter is made: the answer comes after
    wanted = EventFilter(
        occurred=EventOccurredFilter(since=now - timedelta(minutes=5), until=now + timedelta(seconds=timeout_s + 60)),
        event=EventNameFilter(name=["prefect.automation.action.executed", "prefect.automation.action.failed"]),
        related=EventRelatedFilter(id=[f"prefect.event.{event_id}"]),
    )
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            for event in client.read_events(wanted, limit=10).events:  # the server allows at most 50
                if event.event.endswith(".failed"):
                    raise RuntimeError(f"the server could not start the run: {event.payload.get('reason', event)}")
                for related in event.related:
                    if related.get("prefect.resource.role") == "flow-run":
                        return client.read_flow_run(related.id.removeprefix("prefect.flow-run."))
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)


class Follower:
    """A thread of `rsr serve`: every POLL_S, retry what crashed (recovery.sweep) and say how runs went."""

    def __init__(self, deployments: dict[UUID, str], say: Callable[[str], None], log_file: str | None) -> None:
        self.deployments = deployments  # id -> name
        self.say = say
        self.log_file = log_file
        self.seen: dict[UUID, str] = {}  # run id -> the state name last said (or seen, on the first look)
        self.stop = threading.Event()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="rsr-serve-follower", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        from prefect.client.orchestration import get_client

        first = True
        while not self.stop.wait(0 if first else POLL_S):
            try:
                with get_client(sync_client=True) as client:
                    self.look(client, quiet=first)
                first = False
            except Exception as err:  # the server may be restarting: say so, try again at the next poll
                log.warning("rsr serve could not read its runs from the Prefect server: %s", one_line(str(err)))

    def look(self, client, quiet: bool = False) -> None:  # noqa: ANN001 (SyncPrefectClient)
        """Retry what crashed, then one line for each run whose state changed since the last look."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
        from prefect.client.schemas.sorting import FlowRunSort

        for line in sweep(client, self.deployments):
            self.say(line)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=list(self.deployments))),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=RECENT,
        )
        for run in runs:
            state = run.state_name or ""
            if self.seen.get(run.id) != state and not quiet and (line := self.line(run)):
                self.say(line)
            self.seen[run.id] = state

    def line(self, run) -> str | None:  # noqa: ANN001 (FlowRun)
        """What a person following the runs wants to read about this run's state, if anything."""
        kind = run.state_type.value if run.state_type else ""
        name = f"run {run.name} ({self.deployments.get(run.deployment_id, 'a deployment')})"
        cause = one_line(run.state.message if run.state else None)
        if kind == "RUNNING":
            return f"{name} started: {run_link(run.id)}"
        if kind == "COMPLETED":
            return f"{name} completed in {run.total_run_time.total_seconds():.0f} s"
        if kind == "FAILED":
            return f"{name} failed: {cause}" + (f" (traceback: {self.log_file})" if self.log_file else "")
        if kind == "CRASHED" and run.state_name != NOT_RETRIED:
            return f"{name} crashed: {cause}"
        if kind == "CANCELLED":
            return f"{name} cancelled"
        return None
