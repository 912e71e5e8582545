"""What every writing flow does around its body: one writer at a time, and a run row linking Prefect."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.runtime import flow_run

from rsr.settings import StateDir, apply_env
from rsr.store.connect import writer_lock
from rsr.store.writer import Store


def state_dir(state: str | None) -> StateDir:
    return apply_env(StateDir.from_env(state))


@contextmanager
def recorded_run(home: StateDir, params: dict) -> Iterator[str]:
    """Hold the state folder's writer lock and record the current flow run (status failed if the body raises)."""
    flow_name = flow_run.get_flow_name()
    with writer_lock(home.root, f"flow {flow_name}") as outermost:
        with Store.open(home.duckdb) as store:
            if outermost:  # nobody else can be writing now: a run still "running" was killed mid-way
                store.mark_interrupted_runs()
            run_id = store.start_run(flow_name, params, prefect_flow_run_id=flow_run.get_id())
        status = "failed"
        try:
            yield run_id
            status = "completed"
        finally:
            with Store.open(home.duckdb) as store:
                store.finish_run(run_id, status)
