"""What `rsr serve` does about runs whose process died: they are marked Crashed, and retried.

Two ways to tell that a run's process died, both ending in Prefect's Crashed state:
- heartbeats (Prefect's own zombie detection): served runs send one every HEARTBEAT_S, and an automation on the
  server marks a run Crashed when CRASHED_AFTER_S pass without one. It works while `rsr serve` is down, so the UI
  tells the truth; it covers the runs of this `rsr serve`'s deployments (the tag SERVED_TAG).
- the state folder, at once, when `rsr serve` starts: a run row still "running" while nobody holds the writer lock
  belongs to a process that died (flows/_run.py), so its Prefect run (and the subflows under it) is Crashed now.

A Crashed run of a served deployment is then retried, the way Prefect's "Retry" button does (AwaitingRetry: the
same run, its parameters, run_count + 1), at most CRASH_RETRIES times. Scoring is idempotent (score keys), so a
retry completes what was lost and stores nothing twice. A run that was being cancelled ends Cancelled instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from uuid import UUID

from prefect.automations import AutomationCore
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas import filters as f
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.states import AwaitingRetry, Cancelled, Crashed

from rsr.settings import StateDir
from rsr.store.connect import StateBusy, writer_lock
from rsr.store.writer import Store
from rsr_deployments.logs import one_line

HEARTBEAT_S = 30  # Prefect's minimum
CRASHED_AFTER_S = 90  # three missed heartbeats: Prefect's documented rule of thumb
CRASH_RETRIES = 2  # a run whose process died is run again at most this many times
SERVED_TAG = "rsr-serve"  # on the deployments `rsr serve` registers (not on `prefect deploy`'s: other heartbeats)
AUTOMATION = "rsr-crashed-runs"
LIVE = ("RUNNING", "PENDING", "CANCELLING")
NOT_RETRIED = "NotRetried"  # the name of a Crashed state whose retries are spent


def crash_automation() -> AutomationCore:
    """Prefect's documented zombie-run automation, for served runs: after a heartbeat, another event of the same run
    is expected within CRASHED_AFTER_S, else the run is marked Crashed."""
    return AutomationCore(
        name=AUTOMATION,
        description="rsr serve: a served run with no heartbeat for a while is Crashed (rsr serve then retries it)",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{SERVED_TAG}"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=CRASHED_AFTER_S),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {CRASHED_AFTER_S} s: the process running it died (rsr serve stopped, the "
                "machine went down, out of memory); rsr serve retries it",
            )
        ],
    )


def register_crash_automation(client: SyncPrefectClient) -> None:
    """Create the automation, or bring an existing one of that name up to date."""
    automation = crash_automation()
    existing = client.read_automations_by_name(AUTOMATION)
    if existing:
        client.update_automation(existing[0].id, automation)
    else:
        client.create_automation(automation)


def interrupted_runs(home: StateDir) -> list[str]:
    """The Prefect runs whose process died holding the state folder: run rows left "running" while the writer lock
    is free. Marked interrupted here (as the next flow would); [] when a flow holds the lock (it is alive)."""
    if not home.duckdb.exists():
        return []
    try:
        with writer_lock(home.root, "rsr serve: looking for runs that died", wait_s=0), Store.open(home.duckdb) as s:
            return s.mark_interrupted_runs()
    except StateBusy:
        return []


def sweep(client: SyncPrefectClient, deployments: dict[UUID, str], dead: Iterable[str] = ()) -> list[str]:
    """Crash the runs known `dead` (and their subflows), then retry or end each Crashed run of these deployments
    (id -> name). Returns what it did, one line each."""
    for run_id in dead:
        run = client.read_flow_run(run_id)
        if run.state_type and run.state_type.value in LIVE:
            _crash(client, run, f"its process died while {run.state_name} (found when rsr serve started)")
    crashed = client.read_flow_runs(
        flow_run_filter=f.FlowRunFilter(
            deployment_id=f.FlowRunFilterDeploymentId(any_=list(deployments)),
            state=f.FlowRunFilterState(
                type=f.FlowRunFilterStateType(any_=[StateType.CRASHED]),
                name=f.FlowRunFilterStateName(not_any_=[NOT_RETRIED]),
            ),
        )
    )
    return [f"run {run.name} ({deployments[run.deployment_id]}) {_retry_or_end(client, run)}" for run in crashed]


def _retry_or_end(client: SyncPrefectClient, run: FlowRun) -> str:
    """A Crashed run of a served deployment: its subflows crashed with it; then Cancelled (if it was being cancelled),
    retried (AwaitingRetry, now), or left Crashed once its retries are spent."""
    _crash_subflows(client, run)
    cause = one_line(run.state.message if run.state else None)
    states = sorted(client.read_flow_run_states(run.id), key=lambda state: state.timestamp)
    before = states[-2].type.value if len(states) > 1 else None
    if before == "CANCELLING":
        client.set_flow_run_state(run.id, Cancelled(message=f"cancelled; its process was gone ({cause})"), force=True)
        return "was being cancelled and its process is gone: cancelled"
    if run.run_count > CRASH_RETRIES:
        spent = f"{cause}; not retried: crashed {run.run_count} times (rsr serve retries {CRASH_RETRIES})"
        # Crashed still, under a name that says why it stays so (and that the next sweep passes over)
        client.set_flow_run_state(run.id, Crashed(message=spent, name=NOT_RETRIED), force=True)
        return f"crashed {run.run_count} times, not retried again: {cause}"
    attempt = f"retry {run.run_count} of {CRASH_RETRIES}"
    client.set_flow_run_state(run.id, AwaitingRetry(message=f"{attempt} after a crash: {cause}"), force=True)
    return f"crashed: {cause}; retrying it ({attempt})"


def _crash(client: SyncPrefectClient, run: FlowRun, message: str) -> None:
    client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    _crash_subflows(client, run)


def _crash_subflows(client: SyncPrefectClient, run: FlowRun) -> None:
    """Subflows left running under a run whose process died died with it (they ran in that process)."""
    children = client.read_flow_runs(
        flow_run_filter=f.FlowRunFilter(
            parent_flow_run_id=f.FlowRunFilterParentFlowRunId(any_=[run.id]),
            state=f.FlowRunFilterState(type=f.FlowRunFilterStateType(any_=[StateType[s] for s in LIVE])),
        )
    )
    for child in children:
        client.set_flow_run_state(child.id, Crashed(message=f"its parent run {run.name} crashed"), force=True)
        _crash_subflows(client, child)
