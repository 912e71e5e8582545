"""The `rsr` command. The one file in rsr/ that reaches up to flows/ and deployments/, lazily inside commands."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rsr_tasks.curate import Ingested

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Curate reasoning trajectories by RSR.")

# The CLI's choices (each member's value is its name). Dtype auto: bfloat16 on AMX CPUs and CUDA, else float32.
Dtype = StrEnum("Dtype", ["auto", "float32", "bfloat16"])
Format = StrEnum("Format", ["messages", "sharegpt", "generations", "zeroeval", "table", "hf"])
Policy = StrEnum("Policy", ["per_problem_min_rsr", "top_teachers", "rsr_threshold"])
OutputFormat = StrEnum("OutputFormat", ["table", "csv", "json"])
STUDENT_HELP = "smollm2-135m, gemma3-270m, a model folder or a hub id"
MAP_HELP = (
    "FIELD=COLUMN ... (several pairs, or repeat --map): problem, response, reasoning, answer, correctness, teacher, "
    "id, system, problem_id, messages, prompt, tools; COLUMN may be a dotted path (info.reference_answer, "
    "messages.0.info.x); a list column gives one trajectory per element (docs/formats.md)"
)
TemplateKwargsOpt = Annotated[
    str | None,
    typer.Option(
        "--chat-template-kwargs",
        metavar="JSON",
        help="the chat template's options, as vLLM's (e.g. '{\"enable_thinking\": true}'); part of the student's id",
    ),
]
MAP_PAIRS = {"allow_extra_args": True}  # --map a=b c=d: the pairs after the first reach the command as extra args


def _fail(message: str) -> None:
    log = _LOG.get("path")  # set under `rsr` (main) once a flow may have logged its traceback there
    typer.secho(f"error: {message}" + (f" (log: {log})" if log else ""), fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@contextmanager
def _user_errors(*types: type[Exception]) -> Iterator[None]:
    """The errors a user can fix (by default: a bad file or value, a busy state folder) as one clear line."""
    from rsr.store.connect import StateBusy

    caught = types or (FileNotFoundError, ValueError, StateBusy)
    try:
        yield
    except caught as err:
        _fail(str(err))


# ---- failures: one line on the terminal, the whole story in a log file --------------------------------------
# `rsr` (main) sends every log record, Prefect's tracebacks included, to <state>/logs/ instead of the terminal, and
# turns any failure into one line naming its cause and that file. Tests calling `app` in-process keep Prefect's.
_LOG: dict[str, Path] = {}
MIN_FREE_BYTES = 32 << 20  # below this the state folder is "full": Prefect's and MLflow's SQLite fail midway


class _LogFile(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        """A full disk cannot take the log either: say nothing here, the one line on the terminal still comes."""


def _log_to(folder: Path, configure_prefect: bool = False) -> Path | None:
    """Every log record (Prefect's own logger does not propagate) into one file of this command under `folder`."""
    if "path" in _LOG or os.environ.get("RSR_LOG_TO_TERMINAL"):
        return _LOG.get("path")
    if configure_prefect:  # Prefect's logging set up first: set up later, it would drop our handler
        from prefect.logging.configuration import ensure_logging_setup

        ensure_logging_setup()

    name = f"rsr-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for where in (folder, Path(tempfile.gettempdir()) / "rsr-logs"):
        try:
            where.mkdir(parents=True, exist_ok=True)
            handler = _LogFile(where / name, encoding="utf-8")
        except OSError:
            continue
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        if not logging.getLogger("prefect").propagate:  # Prefect's records stop at its own logger
            logging.getLogger("prefect").addHandler(handler)
        logging.captureWarnings(True)
        _LOG["path"] = where / name
        break
    return _LOG.get("path")


def _check_writable(root: Path) -> None:
    """A state folder that cannot be written (read-only, not ours, full) says so before anything starts in it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        _fail(f"the state folder {root} is not writable ({err.strerror}): use a writable RSR_HOME or --state")
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        _fail(f"disk full: {free >> 20} MiB free where the state folder {root} is; free some space or move RSR_HOME")


def _causes(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _one_line(err: BaseException) -> tuple[str, int]:
    """A failure as one line and an exit status: 2 for what the user can fix, 1 for anything else."""
    from rsr.settings import OutsideData
    from rsr.store.connect import DatabaseCorrupt, StateBusy

    for e in _causes(err):  # a full disk first: what fails after it (closing, recording the run) is its echo
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left on device" in str(e):
            return f"disk full: {str(e).strip().splitlines()[0]}", 2
    for e in _causes(err):
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return f"cannot write {e.filename or 'a file'}: {e.strerror} (a read-only or protected folder?)", 2
        if "Read-only file system" in str(e) or "Permission denied" in str(e):
            return f"cannot write: {text}", 2
        if "Could not set lock on file" in str(e) or "Conflicting lock" in str(e):
            return f"the database is locked by another process: {text}", 2
        if isinstance(e, DatabaseCorrupt | StateBusy | OutsideData | FileNotFoundError | ValueError):
            return text, 2
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}", 1


def main() -> None:
    """`rsr`: no library's traceback in front of an error: one line, the traceback in the log file it names."""
    if sys.argv[1:2] != ["serve"]:  # `rsr serve` and its runs' subprocesses keep Prefect's console
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL", "CRITICAL")
    _LOG["main"] = Path()
    try:
        app()
    except Exception as err:  # SystemExit (typer.Exit, click's usage errors) passes through untouched
        line, status = _one_line(err)
        log = _log_to(Path(os.environ.get("RSR_HOME") or ".rsr") / "logs")
        logging.getLogger("rsr").error("rsr failed: %s", line, exc_info=err)
        typer.secho(f"error: {line}" + (f" (log: {log})" if log else ""), fg=typer.colors.RED, err=True)
        raise SystemExit(status) from None


@app.command(context_settings=MAP_PAIRS)
def score(
    ctx: typer.Context,
    input: Annotated[Path, typer.Argument(help="a file in any format add-teacher reads (docs/formats.md)")],
    out: Annotated[Path, typer.Option("--out", help="JSONL, one line per trajectory or rejected record, in order")],
    student: Annotated[str, typer.Option(help=STUDENT_HELP)] = "smollm2-135m",
    dtype: Annotated[Dtype, typer.Option(help="compute dtype of the model body; ranks are exact in both")] = Dtype.auto,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    max_tokens: Annotated[int | None, typer.Option(help="score the first N tokens (default: the context)")] = None,
    chat_template: Annotated[str | None, typer.Option(help="chatml | llama3 | a Jinja file")] = None,
    chat_template_kwargs: TemplateKwargsOpt = None,
    format: Annotated[Format | None, typer.Option("--format", help="input format [default: detected]")] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help=MAP_HELP)] = None,
    tokens_out: Annotated[
        Path | None,
        typer.Option("--tokens", metavar="FILE.parquet", help="also write one row per scored token (streamed)"),
    ] = None,
) -> None:
    """Score trajectories with a student: per-record RSR statistics, then the dataset RSR."""
    from rsr.score.io import output_rows, read_score_input, score_stream, summary, tokens_written
    from rsr.score.student import Student

    with _user_errors(ValueError, OSError):
        items = read_score_input(input, format.value if format else None, _mapping(mapping, ctx.args))
        options = _template_kwargs(chat_template_kwargs)
        model = Student.load(
            student, dtype=dtype.value, device=device, chat_template=chat_template, chat_template_kwargs=options
        )
    if model.chat_template is None:
        _fail(f"student {student!r} has no chat template: pass --chat-template chatml|llama3|FILE.jinja")
    info = model.info()
    _said_read(input, items)
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
        _fail(f"nothing scored from {input}: see the `error` of each line in {out}")
    if tokens_out:
        typer.echo(f"per-token rows: {tokens_out} ({tokens_written(tokens_out)} rows, one per scored token)")
    typer.echo(f"dataset RSR: {ds_rsr:.4f}" + (f" (over {n_ok - n_truncated} of {n_ok})" if n_truncated else ""))


@app.command(context_settings=MAP_PAIRS)
def explain(
    ctx: typer.Context,
    trajectory: Annotated[str, typer.Argument(help="a trajectory_id in the state folder, or with --file a record id")],
    student: Annotated[str, typer.Option(help=STUDENT_HELP)] = "smollm2-135m",
    dtype: Annotated[Dtype, typer.Option(help="the dtype it was scored in")] = Dtype.auto,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    chat_template: Annotated[str | None, typer.Option(help="chatml | llama3 | a Jinja file, as scored")] = None,
    chat_template_kwargs: TemplateKwargsOpt = None,
    max_tokens: Annotated[int | None, typer.Option(help="as scored (default: the context)")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="a file `rsr score` read (then TRAJECTORY is its id)")
    ] = None,
    format: Annotated[Format | None, typer.Option("--format", help="--file's format [default: detected]")] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help=MAP_HELP)] = None,
    out: Annotated[Path, typer.Option("--out", help="the page (.html) or a folder for it")] = Path("."),
    state: Annotated[str | None, typer.Option("--state", help="state folder (default: $RSR_HOME or ./.rsr)")] = None,
) -> None:
    """One trajectory token by token, as the student scored it: a self-contained HTML page (context greyed, each
    scored token coloured by surprisal, rank on hover, totals checked against the stored score)."""
    from rsr.report.explain import explain_record, explain_trajectory
    from rsr.score.student import Student

    with _user_errors(ValueError, OSError):
        options = _template_kwargs(chat_template_kwargs)
        model = Student.load(
            student, dtype=dtype.value, device=device, chat_template=chat_template, chat_template_kwargs=options
        )
        if file is not None:
            fmt = format.value if format else None
            mapped = _mapping(mapping, ctx.args)
            page = explain_record(file, trajectory, model, out, fmt, mapped, max_tokens=max_tokens)
        else:
            db = _state(state, writes=False).duckdb
            page = explain_trajectory(db, trajectory, model, out, max_tokens=max_tokens)
    typer.echo(f"wrote {page}")


# ---- The DAG commands. Flows are imported lazily: Prefect must see this state folder's settings first. ----------
StateOpt = Annotated[str | None, typer.Option("--state", help="state folder (default: $RSR_HOME or ./.rsr)")]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="score on Ray: ray://HEAD:10001, auto (a cluster on this host) or local (a fresh instance); one GPU "
        "per task unless the YAML's `ray:` says otherwise; overrides the YAML's ray.address (docs/scaling.md)",
    ),
]
MlflowOpt = Annotated[
    str | None,
    typer.Option(
        "--mlflow-uri",
        help="MLflow tracking server for the publish run (default: the config's mlflow_uri, $MLFLOW_TRACKING_URI, "
        "then the state folder's SQLite store)",
    ),
]


def _ray(address: str | None, run_async: bool = False):
    """--ray-address as the flows' `ray` parameter: one GPU per scoring task unless the YAML's `ray:` says more."""
    if not address:
        return None
    if run_async:
        _fail("--ray-address applies to a run in this process; with --async give `rsr serve --ray-address`")
    from rsr.config import RaySpec

    return RaySpec(address=address, num_gpus_per_task=1)


# Our own progress and report are what a user reads; libraries' per-step bars and INFO lines are noise. Read by
# each library when it is imported (after _state: the commands import them lazily); `rsr serve`'s flow runs are
# subprocesses that inherit them.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


def _state(state: str | None, writes: bool = True, server: bool = True):
    """The state folder, with its settings (and QUIET_ENV) in the environment. Under `rsr` (main), a command that
    `writes` checks the folder first and, with `server`, runs its flows on a Prefect server that dies with it."""
    from rsr.settings import StateDir, apply_env

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    home = StateDir.from_env(state)
    shell = "main" in _LOG and writes  # `rsr` at a shell: fatal conditions up front, logs to the state folder
    if shell:
        _check_writable(home.root)
    apply_env(home)
    if shell and server and not os.environ.get("PREFECT_API_URL"):  # set before Prefect is imported
        from rsr_deployments.local_server import start

        (home.root / "logs").mkdir(exist_ok=True)
        timeout = float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])
        os.environ["PREFECT_API_URL"] = start(home.root / "logs" / f"prefect-server-{os.getpid()}.log", timeout)
    if shell and server:  # `rsr serve` keeps its runs' logs on its terminal: it is watched there
        _log_to(home.root / "logs", configure_prefect=True)
    return home


def _template_kwargs(text: str | None) -> dict | None:
    """--chat-template-kwargs JSON: a JSON object, or a clear error."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        _fail(f"--chat-template-kwargs: not JSON ({err}): {text!r}")
    if not isinstance(value, dict):
        _fail(f"--chat-template-kwargs: a JSON object is needed, e.g. '{{\"enable_thinking\": true}}', not {text!r}")
    return value or None


def _mapping(pairs: list[str] | None, extra: list[str] | None = None) -> dict[str, str] | None:
    """--map FIELD=COLUMN ...: several pairs after one flag (the README's form; click leaves the pairs after the
    first as extra arguments) and repeated flags; checked by the ingest's own parser before anything runs."""
    extra = list(extra or [])
    if extra and (not pairs or any("=" not in e for e in extra)):
        stray = [e for e in extra if "=" not in e] or extra
        _fail(f"unexpected argument(s) {' '.join(stray)}: only --map takes several FIELD=COLUMN pairs")
    if not pairs:
        return None
    from rsr.curate.ingest import explicit_pairs, make_plan

    try:
        make_plan("table", [], [*pairs, *extra])  # the whole check (two text fields in one column) before anything
        return explicit_pairs([*pairs, *extra])
    except ValueError as err:
        _fail(f"--map: {err}")


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="pipeline YAML")],
    state: StateOpt = None,
    ray_address: RayAddressOpt = None,
    mlflow_uri: MlflowOpt = None,
) -> None:
    """The whole DAG from a config: teachers -> dedup -> verify -> score -> select -> publish."""
    ray = _ray(ray_address)
    home = _state(state)
    from rsr_flows.pipeline import pipeline

    with _user_errors():
        result = pipeline(str(config.resolve()), state=str(home.root), ray=ray, mlflow_uri=mlflow_uri)
    for curated in result.teachers:
        got = curated.ingested
        typer.echo(
            f"teacher {got.teacher}: {got.records} records = {got.read} read + {got.repeats} repeats + "
            f"{got.quarantined} quarantined"
        )
        _ingest_notes(got)
    for s in result.scores:
        for note in s.notes:
            typer.echo(f"note: {note}")
    status(state)


@app.command()
def demo(state: StateOpt = None) -> None:
    """Write our demo data (3 teachers x 36 problems) and run the whole DAG on it with the embedded student."""
    started = time.perf_counter()
    home = _state(state)
    from rsr.demo import write_demo_data

    config = write_demo_data(home.root / "demo")
    typer.echo(f"demo data and config written to {config.parent}")
    run(config, state=state)
    typer.echo(f"\ndemo finished in {time.perf_counter() - started:.0f}s")


def _emit_async(event: str, name: str, payload: dict, state: str | None) -> None:
    """--async: send the event to the configured Prefect server for `rsr serve` (or a gpu worker) to act on."""
    from rsr_deployments.events import NoPrefectApi, emit

    if state:
        typer.echo("note: --state is not sent; the flow writes to the state folder its server side uses", err=True)
    try:
        event_id = emit(event, name, payload)
    except NoPrefectApi as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"could not send {event} to the Prefect server: {err}")
    typer.echo(f"emitted {event} ({event_id}): {json.dumps(payload)}")


@app.command("add-teacher", context_settings=MAP_PAIRS)
def add_teacher(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="teacher name")],
    path: Annotated[str, typer.Argument(help="file or dataset folder with the teacher's outputs")],
    format: Annotated[Format | None, typer.Option("--format", help="input format [default: detected]")] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help=MAP_HELP)] = None,
    problems: Annotated[str | None, typer.Option(help="JSONL of problems with gold answers")] = None,
    config: Annotated[str | None, typer.Option(help="a hub dataset's config (subset) name")] = None,
    split: Annotated[str | None, typer.Option(help="one split of a hub or saved dataset (default: all)")] = None,
    revision: Annotated[str | None, typer.Option(help="a hub dataset's revision (branch, tag or commit)")] = None,
    no_score: Annotated[bool, typer.Option("--no-score", help="ingest, dedup, verify only")] = False,
    publish: Annotated[bool, typer.Option("--publish", help="then publish for each student scored")] = False,
    state: StateOpt = None,
    run_async: Annotated[bool, typer.Option("--async", help="emit rsr.teacher.added for `rsr serve`")] = False,
    ray_address: RayAddressOpt = None,
) -> None:
    """Curate a new teacher: ingest -> dedup -> verify -> score for every registered student."""
    ray = _ray(ray_address, run_async)
    p = str(Path(path).resolve()) if Path(path).exists() else path
    # The same keywords for the event's payload (with `name` and `file`: prefect.yaml's trigger) and the flow.
    given = {
        "format": format.value if format else None,
        "mapping": _mapping(mapping, ctx.args),
        "problems": str(Path(problems).resolve()) if problems else None,
        "hf_options": {k: v for k, v in (("config", config), ("split", split), ("revision", revision)) if v} or None,
        "score": not no_score,
        "publish": publish,
    }
    if run_async:
        _emit_async("rsr.teacher.added", name, {"name": name, "file": p, **given}, state)
        return
    home = _state(state)
    from rsr_flows.curate import curate_teacher

    with _user_errors():
        result = curate_teacher(name, p, **given, ray=ray, state=str(home.root))
    got = result.ingested
    typer.echo(
        f"teacher {name}: {got.records} records = {got.read} read + {got.repeats} repeats + {got.quarantined} "
        f"quarantined; {got.new} new, {result.duplicates} duplicates, {result.verified} verified"
    )
    _ingest_notes(got)
    for s in result.scores:
        typer.echo(f"  scored {s.scored} for {s.student_id} ({s.errors} errors)")
        for note in s.notes:
            typer.echo(f"  note: {note}")


def _said_read(path: Path, items) -> None:
    """How `rsr score` read its file (the format and the column of each field) and its records' count."""
    typer.echo(f"read {path}: {items.plan}", err=True)
    typer.echo(f"{items.records} records = {len(items.trajectories)} read + {items.repeats} repeats (scored once) + "
               f"{len(items.rejected)} rejected", err=True)  # fmt: skip
    if dropped := sum(t.dropped_turns for t in items.trajectories):  # issue 31: per record in the output's rows
        typer.echo(f"{dropped} turns after the last assistant turn of their records dropped (nothing to score)",
                   err=True)  # fmt: skip


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
    if result.dropped_turns:  # issue 31: agent trajectories end after their last assistant turn
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
    ref: Annotated[str, typer.Argument(help=STUDENT_HELP)],
    dtype: Annotated[Dtype, typer.Option(help="compute dtype of the model body; ranks are exact in both")] = Dtype.auto,
    chat_template: Annotated[str | None, typer.Option(help="chatml | llama3 | a Jinja file")] = None,
    chat_template_kwargs: TemplateKwargsOpt = None,
    publish: Annotated[bool, typer.Option("--publish", help="then publish its dataset (sft-<model name>)")] = False,
    state: StateOpt = None,
    run_async: Annotated[bool, typer.Option("--async", help="emit rsr.student.added for `rsr serve`")] = False,
    ray_address: RayAddressOpt = None,
) -> None:
    """Register a student and score every stored trajectory for it."""
    ray = _ray(ray_address, run_async)
    options = _template_kwargs(chat_template_kwargs)
    if run_async:
        payload = {"ref": ref, "dtype": dtype.value, "chat_template": chat_template}
        payload |= {"chat_template_kwargs": options} if options else {}
        _emit_async("rsr.student.added", ref, payload, state)
        return
    home = _state(state)
    from rsr.config import StudentSpec
    from rsr_flows.rescore import rescore_student

    spec = StudentSpec(ref=ref, dtype=dtype.value, chat_template=chat_template, chat_template_kwargs=options)
    with _user_errors():
        s = rescore_student(spec, ray=ray, publish=publish, state=str(home.root))
    typer.echo(f"scored {s.scored} trajectories for {s.student_id} ({s.errors} errors)")
    for note in s.notes:
        typer.echo(f"note: {note}")


@app.command()
def publish(
    student: Annotated[str, typer.Option(help="student ref")] = "smollm2-135m",
    policy: Annotated[Policy, typer.Option(help="how to select")] = Policy.per_problem_min_rsr,
    k: Annotated[int, typer.Option(help="top_teachers: how many teachers")] = 1,
    threshold: Annotated[float | None, typer.Option(help="rsr_threshold: keep rsr <= this")] = None,
    include_unverified: Annotated[bool, typer.Option(help="also keep answers not verified correct")] = False,
    include_duplicates: Annotated[bool, typer.Option(help="also keep duplicates")] = False,
    include_truncated: Annotated[bool, typer.Option(help="let trajectories scored on a truncated prefix in")] = False,
    dtype: Annotated[Dtype, typer.Option(help="the dtype of the scores to select by")] = Dtype.auto,
    chat_template: Annotated[str | None, typer.Option(help="the student's template, as registered")] = None,
    name: Annotated[str | None, typer.Option(help="dataset name [default: sft-<model name>]")] = None,
    mlflow_uri: MlflowOpt = None,
    push_to_hub: Annotated[
        str | None,
        typer.Option(metavar="REPO", help="also upload to this HF dataset repo (datasets' push; token: HF_TOKEN)"),
    ] = None,
    state: StateOpt = None,
) -> None:
    """Select by policy and publish an SFT dataset (datasets + Parquet + JSONL + card) with MLflow lineage."""
    home = _state(state)
    from rsr.config import StudentSpec
    from rsr.select import SelectionPolicy
    from rsr_flows.publish import publish_dataset

    spec = StudentSpec(ref=student, dtype=dtype.value, chat_template=chat_template)
    with _user_errors():
        pol = SelectionPolicy(
            name=policy.value,
            k=k,
            threshold=threshold,
            verified_only=not include_unverified,
            exclude_duplicates=not include_duplicates,
            include_truncated=include_truncated,
        )
        result = publish_dataset(spec, pol, name, mlflow_uri=mlflow_uri, push_to_hub=push_to_hub, state=str(home.root))
    pub = result.publication
    typer.echo(f"published {pub.n_rows} rows to {pub.path} (MLflow run {pub.mlflow_run_id})")
    if result.hub_commit_url:
        typer.echo(f"pushed to the Hub: {result.hub_commit_url}")


@app.command()
def serve(
    rescore_cron: Annotated[
        str, typer.Option(help='cron for the rescore of every registered student; "" disables')
    ] = "0 2 * * *",
    timezone: Annotated[str, typer.Option(help="time zone of --rescore-cron")] = "UTC",
    limit: Annotated[int, typer.Option(min=1, help="flow runs at a time (they share one DuckDB writer)")] = 1,
    state: StateOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Serve the deployments from this process: curate on rsr.teacher.added, rescore nightly and on
    rsr.student.added (then publish for each re-scored student), publish on demand. Needs PREFECT_API_URL (a
    running `prefect server start`)."""
    ray = _ray(ray_address)
    home = _state(state, server=False)  # it needs the real server: PREFECT_API_URL
    from prefect import serve as prefect_serve

    from rsr.settings import DataScope
    from rsr_deployments.events import NoPrefectApi, require_api
    from rsr_deployments.serve import build_deployments

    with _user_errors(NoPrefectApi):
        url = require_api()
    typer.echo(f"serving curate-teacher, rescore-students, publish for {home.root} from {url}", err=True)
    scope = DataScope.from_env(deployed=True)
    roots = os.pathsep.join(map(str, scope.roots or ())) or "nothing (set RSR_DATA_ROOTS)"
    hub = ", ".join(scope.hub_allow) or "none (RSR_HUB_ALLOW)"
    typer.echo(f"runs read only {roots} and hub ids {hub}: docs/deployments.md", err=True)
    # Each flow run is a subprocess, at most `limit` at a time, until interrupted.
    prefect_serve(*build_deployments(home, rescore_cron or None, timezone, ray), limit=limit)


def _console():  # noqa: ANN202 (rich is imported lazily: `rsr --help` stays fast)
    """Rich output that never cuts a name, number or command: a terminal folds long cells and lets lines run on
    (soft wrap, so a printed command is still one line when copied); a log or pipe gets whole lines, not 80 columns."""
    from rich.console import Console

    console = Console(soft_wrap=True)
    return console if console.is_terminal else Console(soft_wrap=True, width=160)


def _teacher_table(store, student_id: str):  # noqa: ANN202 (rich is imported lazily)
    """The status board of one student, and whether any dataset RSR on it rests on a subset."""
    import pandas as pd
    from rich.table import Table

    from rsr.report.page import teacher_board

    table = Table(title=f"teachers for student {student_id} (lowest dataset RSR first)",
                  box=None, title_justify="left", pad_edge=False, header_style="bold underline")  # fmt: skip
    board = teacher_board(store, student_id).to_dict("records")
    # "scored" is scored of ingested; failed, truncated and dropped tool calls get a column when any teacher has some.
    extra = [c for c in ("n_failed", "n_truncated", "n_dropped_tool_calls") if any(r[c] for r in board)]
    headers = ("rank", "teacher", "scored", *(c[2:] for c in extra), "accuracy", "dataset RSR", "95% interval")
    for col in (*headers, "selected"):  # a long name folds onto a second line; no number is ever cut
        wrap = col == "teacher"
        table.add_column(col, justify="left" if wrap else "right", overflow="fold", no_wrap=not wrap)
    subset = False
    for r in board:
        scored = pd.notna(r["dataset_rsr"])
        subset |= bool(scored and r["on_subset"])
        table.add_row(
            f"{r['rank']:.0f}" if scored else "-",
            r["teacher"],
            f"{r['n_scored']}/{r['n_trajectories']}",
            *(str(r[c]) for c in extra),
            f"{r['all_accuracy']:.1%}" if r["all_accuracy"] is not None else "-",
            (f"{r['dataset_rsr']:.3f}" + (f" on {r['n']}*" if r["on_subset"] else "")) if scored else "-",
            f"{r['ci_low']:.3f}-{r['ci_high']:.3f}" if scored else "-",
            str(r["selected"]),
        )
    return table, subset


@app.command()
def status(state: StateOpt = None) -> None:
    """What the state folder holds: teachers, students, scores, publications, recent runs."""
    home = _state(state, writes=False)
    if not home.duckdb.exists():
        typer.echo(f"{home.duckdb} does not exist yet: run `rsr demo` or `rsr add-teacher`")
        return
    from rsr.store.queries import Reader

    console = _console()
    # Read-only (a snapshot while a flow writes): never a lock error, and never in the way of a writing flow.
    with Reader.open(home.duckdb) as store:
        for student in store.students():
            table, subset = _teacher_table(store, student.student_id)
            console.print(table)
            if subset:
                console.print(
                    "  * dataset RSR on a subset: failed, truncated or unscored trajectories are left out "
                    '(rsr sql "SELECT * FROM teacher_coverage"; failed ones: SELECT error FROM score_history)'
                )
            for setting in store.score_settings(student.student_id):
                k = setting.key
                console.print(
                    f"  scores in {k.dtype}, max_tokens {k.max_tokens}: {setting.n_scored}, of which "
                    f"{setting.n_truncated} truncated (left out of selection unless --include-truncated)"
                )
        n_quarantined, pub = store.n_quarantined(), store.latest_publication()
    console.print(f"quarantined records: {n_quarantined} (rsr sql: SELECT * FROM quarantine)")
    if pub:
        console.print(f"dataset:  {pub['path']}  ({pub['n_rows']} rows; datasets.load_from_disk)")
        console.print(f"MLflow run {pub['mlflow_run_id']}")
    console.print(f"DuckDB:   {home.duckdb}")
    console.print(f"MLflow:   {home.mlflow_uri}")
    console.print(f"  open the UI:  mlflow ui --backend-store-uri {home.mlflow_uri}")
    console.print(f"Prefect:  PREFECT_HOME={home.prefect_home}")
    console.print(f"  open the UI:  PREFECT_HOME={home.prefect_home} prefect server start")


# ---- Read-only SQL and reports (rsr/store/sql.py, rsr/report/page.py). No apply_env: a read creates no state folder.


class _SqlHelp(typer.core.TyperCommand):
    """`rsr sql --help` ends with the documented views and their columns, read from rsr.store's view SQL."""

    def format_help(self, ctx, formatter) -> None:
        super().format_help(ctx, formatter)
        from rich.console import Console
        from rich.table import Table

        from rsr.store.sql import VIEW_DOCS, view_columns

        # Computed here, not at import: the columns come from a small in-memory DuckDB built from rsr.store.
        table = Table(title="Views (tables and details: docs/sql.md)", title_justify="left", show_lines=True)
        table.add_column("view", style="bold", no_wrap=True)
        table.add_column("what, and its columns")
        for name, cols in view_columns().items():
            table.add_row(name, f"{VIEW_DOCS.get(name, '')}\n[dim]{', '.join(c for c, _ in cols)}[/dim]")
        Console().print(table)


def _sql_param(text: str) -> object:
    # Numbers, true/false/null as JSON; anything else (ids, refs) as text.
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool) or value is None else text


@app.command(cls=_SqlHelp)
def sql(
    query: Annotated[str | None, typer.Argument(help="one read-only statement, e.g. SELECT ... (or --file)")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="read the statement from this file")] = None,
    format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="value for the next ? placeholder (repeatable)")
    ] = None,
    wait: Annotated[float, typer.Option(help="seconds to retry a locked database before reading a snapshot")] = 2.0,
    timeout: Annotated[float | None, typer.Option(help="stop the query after this many seconds")] = None,
    max_rows: Annotated[int | None, typer.Option(help="keep at most this many rows")] = None,
    state: StateOpt = None,
) -> None:
    """Run a read-only SQL query on the state's DuckDB. Writes are refused; works while a flow is writing."""
    from rsr.settings import StateDir
    from rsr.store.sql import SqlError, run_query, to_csv, to_json

    if (query is None) == (file is None):
        _fail('give the query as an argument or with --file (one of them), e.g. rsr sql "SELECT * FROM runs"')
    if file is not None:
        try:
            query = file.read_text(encoding="utf-8")
        except OSError as err:
            _fail(f"{file}: cannot read the query file: {err.strerror or err}")
    home = StateDir.from_env(state)
    params = [_sql_param(p) for p in param] if param else None
    with _user_errors(SqlError, FileNotFoundError):
        result = run_query(home.duckdb, query or "", params, wait_s=wait, timeout_s=timeout, max_rows=max_rows)
    if result.note:
        typer.secho(f"note: {result.note}", fg=typer.colors.YELLOW, err=True)
    if format is OutputFormat.csv:
        typer.echo(to_csv(result), nl=False)
    elif format is OutputFormat.json:
        typer.echo(to_json(result))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(show_lines=False)
        numeric = re.compile(r"^(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|DOUBLE|FLOAT|REAL|DECIMAL)\b", re.IGNORECASE)
        for col, typ in zip(result.columns, result.types, strict=True):
            table.add_column(col, overflow="fold", justify="right" if numeric.match(typ) else "left")
        for row in result.rows:
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        console = Console()
        console.print(table)
        console.print(f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}", style="dim")
    if result.truncated:
        typer.secho(f"note: only the first {max_rows} rows are shown (--max-rows)", fg=typer.colors.YELLOW, err=True)


def _registered_student(home, ref: str):
    """The student as it was registered (ref, dtype, chat template), loaded: explain pages need the model."""
    from rsr.score.student import Student
    from rsr.store.queries import Reader

    with Reader.open(home.duckdb) as reader:
        info = reader.registrations(ref)[0].info
    template, options = info.get("chat_template"), info.get("chat_template_kwargs")
    return Student.load(info["ref"], dtype=info["dtype"], chat_template=template, chat_template_kwargs=options,
                        state=home)  # fmt: skip


@app.command()
def report(
    student: Annotated[str, typer.Option("--student", help="student ref (e.g. smollm2-135m) or student_id")],
    out: Annotated[Path, typer.Option("--out", help="folder for the PNGs and report.html")],
    mlflow: Annotated[
        bool, typer.Option("--mlflow/--no-mlflow", help="log the files to the latest publication's MLflow run")
    ] = True,
    mlflow_uri: MlflowOpt = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="also each teacher's lowest/highest-RSR trajectory, token by token")
    ] = False,
    state: StateOpt = None,
) -> None:
    """Plots + one HTML page for a student: RSR per teacher, RSR vs accuracy, selection, score history."""
    from rsr.report.page import build_report
    from rsr.settings import StateDir

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    home = StateDir.from_env(state)
    with _user_errors(ValueError, FileNotFoundError):  # an SqlError is a ValueError
        model = _registered_student(home, student) if explain else None
        result = build_report(home, student, out, log_to_mlflow=mlflow, mlflow_uri=mlflow_uri, explain_with=model)
    for path in [*result.pages, *result.pngs, result.html]:
        typer.echo(f"wrote {path}")
    for warning in result.warnings:
        typer.secho(f"note: {warning}", fg=typer.colors.YELLOW, err=True)
    if result.mlflow_run_id:
        typer.echo(f"logged to MLflow run {result.mlflow_run_id} under report/")


if __name__ == "__main__":  # pragma: no cover
    main()
