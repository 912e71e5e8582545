"""The DAG's commands: `rsr run` (a whole config), `rsr demo`, `rsr add-teacher`, `rsr add-student`. Flows are
imported lazily: Prefect must see this state folder's settings first."""

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
    ContaminatedOpt,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    FormatOpt,
    MapOpt,
    MlflowOpt,
    RayAddressOpt,
    RayCpusOpt,
    RayGpusOpt,
    RevisionOpt,
    StateOpt,
    TemplateKwargsOpt,
    mapping,
    ray,
    state,
    student_spec,
)

if TYPE_CHECKING:
    from rsr.stages.curate import Ingested

AsyncOpt = "--async"


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="pipeline YAML")],
    state_folder: StateOpt = None,
    ray_address: RayAddressOpt = None,
    ray_gpus_per_task: RayGpusOpt = None,
    ray_cpus_per_task: RayCpusOpt = None,
    mlflow_uri: MlflowOpt = None,
) -> None:
    """The whole DAG from a config, ingest to publish."""
    ray_spec = ray(ray_address, ray_gpus_per_task, ray_cpus_per_task, config=True)
    home = state(state_folder)
    from rsr_flows.pipeline import pipeline

    with user_errors():
        result = pipeline(str(config.resolve()), state=str(home.root), ray=ray_spec, mlflow_uri=mlflow_uri)
    for checked in result.benchmarks:
        b = checked.registered.benchmark
        typer.echo(f"benchmark {b.name}: {b.n_problems} problems, digest {b.digest[:12]} "
                   f"({'added' if checked.registered.new else 'registered before'})")  # fmt: skip
    for curated in result.teachers:
        got = curated.ingested
        typer.echo(
            f"teacher {got.teacher}: {got.records} records = {got.read} read + {got.repeats} repeats + "
            f"{got.quarantined} quarantined"
        )
        _ingest_notes(got)
        decontamination_notes(curated.decontaminated)
    for s in result.scores:
        for note in s.notes:
            typer.echo(f"note: {note}")
    from rsr.cli.status import status

    status(state_folder)


@app.command()
def demo(state_folder: StateOpt = None) -> None:
    """The whole DAG on our demo data with the embedded student.

    Writes 3 teachers x 36 problems, then runs it as `rsr run` does."""
    started = time.perf_counter()
    home = state(state_folder)
    from rsr.demo import write_demo_data

    config = write_demo_data(home.root / "demo")
    typer.echo(f"demo data and config written to {config.parent}")
    run(config, state_folder=state_folder)
    typer.echo(f"\ndemo finished in {time.perf_counter() - started:.0f}s")


def emit_async(event: str, name: str, payload: dict, state_folder: str | None) -> None:
    """--async: send the event to the configured Prefect server for `rsr serve` (or a gpu worker) to act on."""
    from rsr_deployments.events import NoPrefectApi, emit

    if state_folder:
        typer.echo("note: --state is not sent; the flow writes to the state folder its server side uses", err=True)
    try:
        event_id = emit(event, name, payload)
    except NoPrefectApi as err:
        fail(str(err))
    except OSError as err:
        fail(f"could not send {event} to the Prefect server: {err}")
    shown = {k: (f"<{len(v)} characters>" if k == "chat_template_text" and v else v) for k, v in payload.items()}
    typer.echo(f"emitted {event} ({event_id}): {json.dumps(shown)}")
    from rsr_deployments.runs import RUN_WAIT_S, run_link, run_started_by

    with user_errors(RuntimeError):
        run = run_started_by(event_id, RUN_WAIT_S)
    if run is None:
        fail(f"no flow run was started for it within {RUN_WAIT_S:.0f}s: is `rsr serve` (or `prefect deploy`) "
             "registered on this Prefect server? (docs/deployments.md)")  # fmt: skip
    typer.echo(f"flow run {run.name} ({run.id}): {run_link(run.id)}")


@app.command("add-teacher", context_settings=MAP_PAIRS)
def add_teacher(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="teacher name")],
    path: Annotated[str, typer.Argument(help="file or dataset folder with the teacher's outputs")],
    format: FormatOpt = None,
    pairs: MapOpt = None,
    problems: Annotated[str | None, typer.Option(metavar="FILE", help="JSONL of problems with gold answers")] = None,
    config: Annotated[str | None, typer.Option(metavar="NAME", help="a hub dataset's config (subset) name")] = None,
    split: Annotated[str | None, typer.Option(help="one split of a hub or saved dataset (default: all)")] = None,
    revision: Annotated[
        str | None, typer.Option(metavar="REV", help="a hub dataset's revision (branch, tag, commit)")
    ] = None,
    no_score: Annotated[bool, typer.Option("--no-score", help="ingest, dedup, verify only")] = False,
    publish: Annotated[bool, typer.Option("--publish", help="then publish for each student scored")] = False,
    state_folder: StateOpt = None,
    run_async: Annotated[bool, typer.Option(AsyncOpt, help="emit rsr.teacher.added for `rsr serve`")] = False,
    ray_address: RayAddressOpt = None,
    ray_gpus_per_task: RayGpusOpt = None,
    ray_cpus_per_task: RayCpusOpt = None,
) -> None:
    """Curate a new teacher and score it for every student.

    Ingest, dedup, verify, then score (and with --publish, publish) for each registered student."""
    ray_spec = ray(ray_address, ray_gpus_per_task, ray_cpus_per_task, run_async)
    p = str(Path(path).resolve()) if Path(path).exists() else path
    # The same keywords for the event's payload (with `name` and `file`: prefect.yaml's trigger) and the flow.
    given = {
        "format": format.value if format else None,
        "mapping": mapping(pairs, ctx.args),
        "problems": str(Path(problems).resolve()) if problems else None,
        "hf_options": {k: v for k, v in (("config", config), ("split", split), ("revision", revision)) if v} or None,
        "score": not no_score,
        "publish": publish,
    }
    if run_async:
        emit_async("rsr.teacher.added", name, {"name": name, "file": p, **given}, state_folder)
        return
    home = state(state_folder)
    from rsr_flows.curate import curate_teacher

    with user_errors():
        result = curate_teacher(name, p, **given, ray=ray_spec, state=str(home.root))
    got = result.ingested
    typer.echo(
        f"teacher {name}: {got.records} records = {got.read} read + {got.repeats} repeats + {got.quarantined} "
        f"quarantined; {got.new} new, {result.duplicates} duplicates, {result.verified} verified"
    )
    _ingest_notes(got)
    decontamination_notes(result.decontaminated)
    for s in result.scores:
        typer.echo(f"  scored {s.scored} for {s.student_id} ({s.errors} errors)")
        for note in s.notes:
            typer.echo(f"  note: {note}")


def _ingest_notes(result: Ingested) -> None:
    """What a user must know after an ingest: how each source was read (format, the column of each field; its
    counts when there are several), why records were quarantined, and what missing golds mean."""
    for plan, src in zip(result.plans, result.sources, strict=True):
        typer.echo(f"  read {plan}")
        if len(result.sources) > 1:
            counts = f"{src.stored} read + {src.repeats} repeats + {src.quarantined} quarantined"
            typer.echo(f"    {src.records} records = {counts}")
    for reason, n in result.top_reasons:
        typer.echo(f"  quarantined {n} x, e.g. {reason}")
    if result.quarantined:
        typer.echo('  all of them: rsr sql "SELECT source_file, source_line, reason FROM quarantine"')
    if result.dropped_turns:  # agent trajectories end after their last assistant turn
        sql = 'rsr sql "SELECT source_line, dropped_turns FROM trajectories"'
        typer.echo(f"  {result.dropped_turns} turns after the last assistant turn of their records dropped (nothing "
                   f"to score there); per record: {sql}")  # fmt: skip
    if result.no_gold:
        typer.echo(
            f"  {result.no_gold} of {result.read} trajectories have no gold answer: they are verified `no_gold`, "
            "and publishing (verified_only by default) selects none of them until a gold arrives (--problems FILE, "
            "--map answer=COLUMN) or you publish with --include-unverified"
        )


@app.command("add-student")
def add_student(
    ref: Annotated[
        str, typer.Argument(metavar="REF|ID", help="a model (smollm2-135m, a folder, a hub id) or a student_id")
    ],
    revision: RevisionOpt = None,
    chat_template: ChatTemplateOpt = None,
    chat_template_kwargs: TemplateKwargsOpt = None,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = "auto",
    publish: Annotated[bool, typer.Option("--publish", help="then publish its dataset (sft-<model name>)")] = False,
    state_folder: StateOpt = None,
    run_async: Annotated[bool, typer.Option(AsyncOpt, help="emit rsr.student.added for `rsr serve`")] = False,
    ray_address: RayAddressOpt = None,
    ray_gpus_per_task: RayGpusOpt = None,
    ray_cpus_per_task: RayCpusOpt = None,
    include_contaminated: ContaminatedOpt = False,
    fill_metrics: Annotated[
        bool, typer.Option("--fill-metrics", help="also re-score rows stored before mean_entropy/top1_share existed")
    ] = False,
) -> None:
    """Register a student; score every stored trajectory for it.

    But those holding a benchmark problem (unless --include-contaminated). Given a student_id: score what that
    registration lacks."""
    ray_spec = ray(ray_address, ray_gpus_per_task, ray_cpus_per_task, run_async)
    spec = student_spec(ref, revision, chat_template, chat_template_kwargs, dtype, device)
    if run_async and fill_metrics:
        fail("--fill-metrics applies to a run in this process, not to --async")
    if run_async:  # the template travels by content: the flow may run in another folder or on another host
        payload = spec.model_dump(include={"ref", "revision", "dtype", "chat_template", "chat_template_text",
                                           "chat_template_kwargs"}, exclude_none=True)  # fmt: skip
        emit_async("rsr.student.added", spec.ref, payload, state_folder)
        return
    home = state(state_folder)
    from rsr.config import ScoringSpec
    from rsr_flows.rescore import rescore_student

    scoring = ScoringSpec(fill_metrics=True) if fill_metrics else None
    with user_errors():
        if spec.student_id:
            spec = _registered(home, spec)
        s = rescore_student(spec, scoring, ray=ray_spec, publish=publish, state=str(home.root),
                            include_contaminated=include_contaminated)  # fmt: skip
    typer.echo(f"scored {s.scored} trajectories for {s.student_id} ({s.errors} errors)")
    for note in s.notes:
        typer.echo(f"note: {note}")
    if publish and s.published:
        pub = s.published.publication
        typer.echo(f"published {pub.n_rows} rows to {pub.path} (MLflow run {pub.mlflow_run_id})")
    elif publish:
        typer.echo(f"nothing new was scored for {s.student_id}: no dataset published "
                   f"(publish its current scores with `rsr publish --student {s.student_id}`)")  # fmt: skip


def _registered(home, spec):
    """A student_id given to add-student: the registration's own spec (its template by content, its options)."""
    from rsr.store.queries import Reader

    with Reader.open(home.duckdb) as reader:
        registration = reader.find_student(spec)
    dtype = registration.dtype if spec.dtype == "auto" else spec.dtype
    return registration.spec(dtype).model_copy(update={"device": spec.device})


def decontamination_notes(got, every: bool = False) -> None:  # noqa: ANN001 (rsr_tasks is imported lazily)
    """What the decontaminate stage found: per teacher and benchmark, the trajectories holding its problems."""
    if got is None or not got.benchmarks:
        return
    if not got.flagged:
        if every or got.checked:
            typer.echo(f"  decontaminate: no trajectory holds a problem of {', '.join(got.benchmarks)}")
        return
    for teacher, found in sorted(got.found.items()):
        per = ", ".join(f"{benchmark}: {n}" for benchmark, n in sorted(found.items()))
        typer.echo(f"  decontaminate: {teacher}: trajectories holding a benchmark problem ({per})")
    typer.echo('  they stay in the store, not scored nor selected: rsr sql "SELECT * FROM contamination"')
