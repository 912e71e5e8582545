"""add_benchmark: register a benchmark, then check every stored trajectory against it (as add-student scores every
stored trajectory for a new student). New teachers are checked by curate_teacher's decontaminate stage."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from rsr.config import BenchmarkSpec
from rsr_flows._entry import BenchmarkAdded, benchmark_input, data_scope, parse_payload
from rsr_flows._run import recorded_run, state_dir
from rsr_tasks.decontaminate import Decontaminated, Registered, decontaminate, register_benchmark


@dataclass(frozen=True)
class BenchmarkChecked:
    registered: Registered
    checked: Decontaminated


@flow(name="add-benchmark")
def add_benchmark(
    benchmark: BenchmarkSpec | None = None, state: str | None = None, event: str | None = None
) -> BenchmarkChecked:
    """`event`: an rsr.benchmark.added payload as JSON text (the deployment trigger's one parameter), in place of
    `benchmark`. Its source passes the data scope's checks (data roots, hub allow-list) before anything is read."""
    if event is not None:
        got = parse_payload(BenchmarkAdded, event, "rsr.benchmark.added").model_dump(exclude_none=True)
        benchmark = BenchmarkSpec(**got)
    if benchmark is None:
        raise ValueError("add-benchmark needs a benchmark (a name, and a source unless it is a preset)")
    benchmark = benchmark_input(data_scope(), benchmark)
    home = state_dir(state)
    with recorded_run(home, {"benchmark": benchmark.model_dump(exclude_none=True)}) as run_id:
        registered = register_benchmark.submit(home.duckdb, run_id, benchmark)
        checked = decontaminate.submit(home.duckdb, run_id, wait_for=[registered])
        return BenchmarkChecked(registered.result(), checked.result())
