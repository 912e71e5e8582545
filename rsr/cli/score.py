"""`rsr score` and `rsr explain`: a student over a file (no store needed), or one stored trajectory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rsr.cli.app import app
from rsr.cli.errors import fail, user_errors
from rsr.cli.options import (
    MAP_PAIRS,
    ChatTemplateOpt,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    FormatOpt,
    MapOpt,
    RevisionOpt,
    StateOpt,
    StudentOpt,
    TemplateKwargsOpt,
    mapping,
    student_spec,
)

if TYPE_CHECKING:
    from rsr.score.student import Student
    from rsr.settings import StateDir
    from rsr.spec import StudentSpec


def load_named(spec: StudentSpec, home: StateDir, stored: bool) -> Student:
    """The student a spec names: the registration it names in the state folder (loaded as registered: its template
    by content, its options), else, for a file (`stored` False), the spec as given. A student_id, or a stored
    trajectory, needs the registration."""
    from rsr.score.student import Student
    from rsr.spec import UnknownStudent
    from rsr.store.queries import Reader

    registration = None
    if home.duckdb.exists():
        with Reader.open(home.duckdb) as reader:
            try:
                registration = reader.find_student(spec)
            except UnknownStudent:
                if stored or spec.student_id:
                    raise
    elif stored or spec.student_id:
        raise FileNotFoundError(f"{home.duckdb} does not exist: no registered student {spec.ref!r} to load")
    if registration is not None:
        dtype = registration.dtype if spec.dtype == "auto" else spec.dtype  # the dtype it was scored in
        spec = registration.spec(dtype).model_copy(update={"device": spec.device})
    return Student.from_spec(spec, state=home)


@app.command(context_settings=MAP_PAIRS)
def score(
    ctx: typer.Context,
    input: Annotated[Path, typer.Argument(help="a file in any format add-teacher reads (docs/formats.md)")],
    out: Annotated[Path, typer.Option("--out", help="JSONL, one line per trajectory or rejected record, in order")],
    student: StudentOpt = "smollm2-135m",
    revision: RevisionOpt = None,
    chat_template: ChatTemplateOpt = None,
    chat_template_kwargs: TemplateKwargsOpt = None,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = "auto",
    max_tokens: Annotated[int | None, typer.Option(help="score the first N tokens (default: the context)")] = None,
    format: FormatOpt = None,
    pairs: MapOpt = None,
    tokens_out: Annotated[
        Path | None,
        typer.Option("--tokens", metavar="FILE.parquet", help="also write one row per scored token (streamed)"),
    ] = None,
    state: StateOpt = None,
) -> None:
    """Score a file's trajectories with a student (no store).

    Per-record RSR statistics, then the dataset RSR. A student_id (or a registered student's name) is loaded
    from the state folder as registered."""
    from rsr.score.io import read_score_input
    from rsr.settings import StateDir

    spec = student_spec(student, revision, chat_template, chat_template_kwargs, dtype, device)
    home = StateDir.from_env(state)  # read only where a student is named by its registration; nothing is created
    with user_errors(ValueError, OSError):
        items = read_score_input(input, format.value if format else None, mapping(pairs, ctx.args))
        model = load_named(spec, home, stored=False)
    if model.chat_template is None:
        fail(f"student {spec.ref!r} has no chat template: pass --chat-template chatml|llama3|FILE.jinja")
    typer.echo(f"read {input}: {items.plan}", err=True)
    typer.echo(f"{items.records} records = {len(items.trajectories)} read + {items.repeats} repeats (scored once) + "
               f"{len(items.rejected)} rejected", err=True)  # fmt: skip
    if dropped := sum(t.dropped_turns for t in items.trajectories):  # per record in the output's rows
        typer.echo(f"{dropped} turns after the last assistant turn of their records dropped (nothing to score)",
                   err=True)  # fmt: skip
    _score_file(model, items, input, out, max_tokens, tokens_out)


def _score_file(model: Student, items, input: Path, out: Path, max_tokens: int | None, tokens_out: Path | None):
    from rsr.score.io import output_rows, score_stream, summary, tokens_written

    info = model.info()
    typer.echo(f"student {model.student_id} ({info['dtype']} on {model.device}); {len(items.trajectories)} "
               f"trajectories from {input}", err=True)  # fmt: skip
    if info.get("render_mode") == "generation" or model.renderer.drops_tool_calls:
        typer.echo(f"note: {info['render_note']}", err=True)
    limit, capped = model.max_tokens_for(max_tokens)
    if capped:
        typer.echo(f"note: {capped}", err=True)
    started = time.perf_counter()
    if tokens_out:
        tokens_out.parent.mkdir(parents=True, exist_ok=True)
    results = score_stream(model, items.trajectories, max_tokens and limit, tokens_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for row in output_rows(items, results, model.student_id):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    n_ok, n_failed, n_truncated, ds_rsr = summary(results)
    tokens = sum(r.stats.n_tokens for r in results if r.stats)
    elapsed = time.perf_counter() - started
    typer.echo(f"scored {n_ok} trajectories ({tokens} response tokens, {tokens / max(elapsed, 1e-9):.0f} tok/s)")
    if n_truncated:
        typer.echo(f"{n_truncated} truncated (scored on their first {limit} tokens; left out of the dataset RSR)")
    if n_failed or items.rejected:
        typer.echo(f"{n_failed} failed to score, {len(items.rejected)} records rejected: see `error` in {out}")
    if not n_ok:
        fail(f"nothing scored from {input}: see the `error` of each line in {out}")
    if tokens_out:
        typer.echo(f"per-token rows: {tokens_out} ({tokens_written(tokens_out)} rows, one per scored token)")
    typer.echo(f"dataset RSR: {ds_rsr:.4f}" + (f" (over {n_ok - n_truncated} of {n_ok})" if n_truncated else ""))


@app.command(context_settings=MAP_PAIRS)
def explain(
    ctx: typer.Context,
    trajectory: Annotated[str, typer.Argument(help="a trajectory_id in the state folder, or with --file a record id")],
    student: StudentOpt = "smollm2-135m",
    revision: RevisionOpt = None,
    chat_template: ChatTemplateOpt = None,
    chat_template_kwargs: TemplateKwargsOpt = None,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = "auto",
    max_tokens: Annotated[int | None, typer.Option(help="as scored (default: the context)")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="a file `rsr score` read (then TRAJECTORY is its id)")
    ] = None,
    format: FormatOpt = None,
    pairs: MapOpt = None,
    out: Annotated[Path, typer.Option("--out", help="the page (.html) or a folder for it")] = Path("."),
    state: StateOpt = None,
) -> None:
    """One trajectory token by token, as the student scored it.

    Context greyed, each scored token coloured by surprisal, rank on hover, totals checked against the stored
    score. A stored trajectory is explained with the registered student the options name, as it was scored."""
    from rsr.cli.options import state as state_of
    from rsr.report.explain import explain_record, explain_trajectory

    spec = student_spec(student, revision, chat_template, chat_template_kwargs, dtype, device)
    home = state_of(state, writes=False)
    with user_errors(ValueError, OSError):
        model = load_named(spec, home, stored=file is None)
        if file is not None:
            fmt = format.value if format else None
            mapped = mapping(pairs, ctx.args)
            page = explain_record(file, trajectory, model, out, fmt, mapped, max_tokens=max_tokens)
        else:
            page = explain_trajectory(home.duckdb, trajectory, model, out, max_tokens=max_tokens)
    typer.echo(f"wrote {page}")
