"""`rsr add-benchmark`: register a benchmark and flag every stored trajectory holding one of its problems; the
decontaminate stage's notes, which the curating commands print too (docs/decontamination.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rsr.cli.app import app
from rsr.cli.curate import decontamination_notes, emit_async
from rsr.cli.errors import fail, user_errors
from rsr.cli.options import StateOpt, state


@app.command("add-benchmark")
def add_benchmark(
    name: Annotated[str, typer.Argument(help="its name; given alone, a preset: aime24, math500, gsm8k, ... (docs)")],
    source: Annotated[
        str | None, typer.Argument(help="a file (JSONL, JSON, CSV, Parquet, compressed), a saved dataset or a hub id")
    ] = None,
    pairs: Annotated[
        list[str] | None, typer.Option("--map", metavar="problem=COLUMN", help="the problem's column (default: found)")
    ] = None,
    split: Annotated[str | None, typer.Option(help="a dataset's split")] = None,
    config: Annotated[str | None, typer.Option(metavar="NAME", help="a hub dataset's config (subset)")] = None,
    revision: Annotated[
        str | None, typer.Option(metavar="REV", help="a hub dataset's branch, tag or commit (default: the newest)")
    ] = None,
    ngram: Annotated[int, typer.Option(min=3, max=64, help="n of the word n-grams")] = 8,
    state_folder: StateOpt = None,
    run_async: Annotated[bool, typer.Option("--async", help="emit rsr.benchmark.added for `rsr serve`")] = False,
) -> None:
    """Register a benchmark; flag the trajectories holding it.

    Flagged trajectories stay in the store but are not scored, selected or published (unless
    --include-contaminated); docs/decontamination.md."""
    mapped = dict(p.partition("=")[::2] for p in pairs or [])
    if set(mapped) - {"problem"} or not all(mapped.values()):
        fail(f"--map takes problem=COLUMN only (the column holding the problem), not {' '.join(pairs or [])}")
    local = source is not None and Path(source).exists()
    given = {"name": name, "source": str(Path(source).resolve()) if local else source, "problem": mapped.get("problem"),
             "split": split, "config": config, "revision": revision, "ngram": ngram}  # fmt: skip
    if run_async:
        emit_async("rsr.benchmark.added", name, {k: v for k, v in given.items() if v is not None}, state_folder)
        return
    home = state(state_folder)
    from rsr.config import BenchmarkSpec
    from rsr_flows.benchmark import add_benchmark as add_benchmark_flow

    with user_errors():
        done = add_benchmark_flow(BenchmarkSpec(**given), state=str(home.root))
    _said_added(done)
    from rsr.store.queries import Reader

    with Reader.open(home.duckdb) as reader:
        for dataset, dataset_id, n in reader.contaminated_publications():
            typer.echo(f"  note: {n} of them are in the published dataset {dataset} ({dataset_id}), published before: "
                       "publish it again (rsr publish) to leave them out")  # fmt: skip


def _said_added(done) -> None:  # noqa: ANN001 (rsr_flows is imported lazily)
    b, checked = done.registered.benchmark, done.checked
    how = "added" if done.registered.new else "already registered with this content: nothing changed"
    where = f"{b.source}" + (f" at revision {b.revision}" if b.revision else "") + (f" [{b.split}]" if b.split else "")
    typer.echo(f"benchmark {b.name}: {b.n_problems} problems from {where} (column {b.problem_column}, "
               f"digest {b.digest[:12]}, n {b.ngram}): {how}")  # fmt: skip
    if done.registered.skipped:
        typer.echo(f"  skipped {b.n_skipped} rows without a problem text, e.g. {done.registered.skipped[0]}")
    typer.echo(f"checked {checked.checked} trajectories ({checked.prompts} distinct prompts)")
    decontamination_notes(checked, every=True)
