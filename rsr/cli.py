"""The `rsr` command. The one file in rsr/ that reaches up to flows/ and deployments/, lazily inside commands."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Curate reasoning trajectories by RSR.")


@app.callback()
def _root() -> None:
    """Curate reasoning trajectories by Rank-Surprisal Ratio (lower is better) for a given student."""


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def score(
    input: Annotated[Path, typer.Argument(help="JSONL or Parquet: one record per trajectory with `messages`, `id`")],
    out: Annotated[Path, typer.Option("--out", help="JSONL, one line per input record, in input order")],
    student: Annotated[
        str, typer.Option(help="smollm2-135m, gemma3-270m, a model folder or a hub id")
    ] = "smollm2-135m",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    max_tokens: Annotated[int | None, typer.Option(help="score the first N tokens (default: the context)")] = None,
    batch_tokens: Annotated[int, typer.Option(help="padded tokens per forward batch")] = 8192,
    chat_template: Annotated[str | None, typer.Option(help="chatml | llama3 | a Jinja file")] = None,
) -> None:
    """Score trajectories with a student: per-record RSR statistics, then the dataset RSR."""
    from rsr.score_io import output_row, read_score_input, summary
    from rsr.student import Student

    try:
        items = read_score_input(input)
        st = Student.load(student, dtype=dtype, device=device, chat_template=chat_template)
    except (FileNotFoundError, ValueError, OSError) as err:
        _fail(str(err))
    if st.chat_template is None:
        _fail(f"student {student!r} has no chat template: pass --chat-template chatml|llama3|FILE.jinja")
    typer.echo(f"student {st.student_id} ({st.info()['dtype']} on {st.device}); {len(items)} records", err=True)
    started = time.perf_counter()
    scorable = [it for it in items if it.error is None]
    results = st.score([it.messages for it in scorable], max_tokens=max_tokens, batch_tokens=batch_tokens)
    by_line = {it.line: r for it, r in zip(scorable, results, strict=True)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps(output_row(it, by_line.get(it.line))) + "\n")
    n_ok, _, ds_rsr = summary(results)
    n_bad = len(items) - n_ok
    tokens = sum(r.stats.n_tokens for r in results if r.stats)
    elapsed = time.perf_counter() - started
    typer.echo(f"scored {n_ok} trajectories ({tokens} response tokens, {tokens / max(elapsed, 1e-9):.0f} tok/s)")
    if n_bad:
        typer.echo(f"{n_bad} records not scored: see `error` in {out}")
    typer.echo(f"dataset RSR: {ds_rsr:.4f}")


# ---------------------------------------------------------------------------------------------------------------
# The DAG commands. Flows are imported lazily: Prefect must see this state folder's settings first.
# ---------------------------------------------------------------------------------------------------------------
StateOpt = Annotated[str | None, typer.Option("--state", help="state folder (default: $RSR_HOME or ./.rsr)")]


def _state(state: str | None):
    from rsr.config import StateDir, apply_env

    _quiet_libraries()
    return apply_env(StateDir.from_env(state))


def _quiet_libraries() -> None:
    """Our own progress and report are what a user reads; libraries' per-step bars and INFO lines are noise."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _parse_mapping(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            _fail(f"--map {pair!r}: expected FIELD=COLUMN, e.g. --map problem=question")
        out[key.strip()] = value.strip()
    return out


def _run_flow(fn, *args, **kwargs):
    """Run a flow; turn the errors a user can fix (bad file, busy state folder) into one clear line."""
    from rsr.lock import StateBusy

    try:
        return fn(*args, **kwargs)
    except (FileNotFoundError, ValueError, StateBusy) as err:
        _fail(str(err))


@app.command()
def run(config: Annotated[Path, typer.Argument(help="pipeline YAML")], state: StateOpt = None) -> None:
    """The whole DAG from a config: teachers -> dedup -> verify -> score -> select -> publish."""
    st = _state(state)
    from flows.pipeline import pipeline

    result = _run_flow(pipeline, str(config.resolve()), state=str(st.root))
    _print_report(st, result)


@app.command()
def demo(state: StateOpt = None) -> None:
    """Write our demo data (3 teachers x 36 problems) and run the whole DAG on it with the embedded student."""
    started = time.perf_counter()
    st = _state(state)
    from rsr.demo import write_demo_data

    config = write_demo_data(st.root / "demo")
    typer.echo(f"demo data and config written to {config.parent}")
    from flows.pipeline import pipeline

    result = _run_flow(pipeline, str(config), state=str(st.root))
    _print_report(st, result)
    typer.echo(f"\ndemo finished in {time.perf_counter() - started:.0f}s")


@app.command("add-teacher")
def add_teacher(
    name: Annotated[str, typer.Argument(help="teacher name")],
    path: Annotated[str, typer.Argument(help="file or dataset folder with the teacher's outputs")],
    format: Annotated[str | None, typer.Option("--format", help="messages | zeroeval | table | hf")] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help="FIELD=COLUMN for --format table")] = None,
    problems: Annotated[str | None, typer.Option(help="JSONL of problems with gold answers")] = None,
    no_score: Annotated[bool, typer.Option("--no-score", help="ingest, dedup, verify only")] = False,
    state: StateOpt = None,
) -> None:
    """Curate a new teacher: ingest -> dedup -> verify -> score for every registered student."""
    st = _state(state)
    from flows.curate import curate_teacher

    p = str(Path(path).resolve()) if Path(path).exists() else path
    pr = str(Path(problems).resolve()) if problems else None
    result = _run_flow(
        curate_teacher,
        name,
        p,
        format=format,
        mapping=_parse_mapping(mapping),
        problems=pr,
        score=not no_score,
        state=str(st.root),
    )
    typer.echo(
        f"teacher {name}: {result['read']} read, {result['new']} new, {result['quarantined']} quarantined, "
        f"{result['duplicates']} duplicates, {result['verified']} verified"
    )
    for s in result["scores"]:
        typer.echo(f"  scored {s['scored']} for {s['student_id']} ({s['errors']} errors)")


@app.command("add-student")
def add_student(
    ref: Annotated[str, typer.Argument(help="smollm2-135m, gemma3-270m, a model folder or a hub id")],
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16")] = "auto",
    chat_template: Annotated[str | None, typer.Option(help="chatml | llama3 | a Jinja file")] = None,
    state: StateOpt = None,
) -> None:
    """Register a student and score every stored trajectory for it."""
    st = _state(state)
    from flows.rescore import rescore_students
    from rsr.config import StudentSpec

    spec = StudentSpec(ref=ref, dtype=dtype, chat_template=chat_template)
    for s in _run_flow(rescore_students, [spec], state=str(st.root)):
        typer.echo(f"scored {s['scored']} trajectories for {s['student_id']} ({s['errors']} errors)")


@app.command()
def publish(
    student: Annotated[str, typer.Option(help="student ref")] = "smollm2-135m",
    policy: Annotated[
        str, typer.Option(help="per_problem_min_rsr | top_teachers | rsr_threshold")
    ] = "per_problem_min_rsr",
    k: Annotated[int, typer.Option(help="top_teachers: how many teachers")] = 1,
    threshold: Annotated[float | None, typer.Option(help="rsr_threshold: keep rsr <= this")] = None,
    include_unverified: Annotated[bool, typer.Option(help="also keep answers not verified correct")] = False,
    include_duplicates: Annotated[bool, typer.Option(help="also keep duplicates")] = False,
    dtype: Annotated[str, typer.Option(help="the student's dtype, as registered")] = "auto",
    chat_template: Annotated[str | None, typer.Option(help="the student's template, as registered")] = None,
    name: Annotated[str, typer.Option(help="dataset name")] = "sft",
    state: StateOpt = None,
) -> None:
    """Select by policy and publish an SFT dataset (datasets + Parquet + JSONL + card) with MLflow lineage."""
    st = _state(state)
    from flows.publish import publish_dataset
    from rsr.config import StudentSpec
    from rsr.select import SelectionPolicy

    try:
        pol = SelectionPolicy(
            name=policy,
            k=k,
            threshold=threshold,
            verified_only=not include_unverified,
            exclude_duplicates=not include_duplicates,
        )
    except ValueError as err:
        _fail(str(err))
    spec = StudentSpec(ref=student, dtype=dtype, chat_template=chat_template)
    result = _run_flow(publish_dataset, spec, pol, name, state=str(st.root))
    typer.echo(f"published {result['n_rows']} rows to {result['path']} (MLflow run {result['mlflow_run_id']})")


@app.command()
def status(state: StateOpt = None) -> None:
    """What the state folder holds: teachers, students, scores, publications, recent runs."""
    st = _state(state)
    if not st.duckdb.exists():
        typer.echo(f"{st.duckdb} does not exist yet: run `rsr demo` or `rsr add-teacher`")
        return
    _print_report(st, None)


def _print_report(st, result: dict | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from rsr.store import Store

    console = Console()
    with Store.open(st.duckdb, read_only=True) as store:
        _, students = store.query("SELECT student_id FROM students ORDER BY registered_at")
        for (student_id,) in students:
            table = Table(title=f"teachers for student {student_id}")
            for col in ("teacher", "trajectories", "accuracy", "dataset RSR", "selected"):
                table.add_column(col, justify="right" if col != "teacher" else "left")
            _, rows = store.query(
                """SELECT s.teacher, s.n_trajectories, s.accuracy, l.dataset_rsr,
                          (SELECT count(*) FROM publication_items i JOIN publications p USING (dataset_id)
                            JOIN trajectories t USING (trajectory_id)
                            WHERE t.teacher = s.teacher AND p.student_id = ?
                              AND p.created_at = (SELECT max(created_at) FROM publications WHERE student_id = ?))
                   FROM teacher_summary s
                   LEFT JOIN teacher_leaderboard l ON l.teacher = s.teacher AND l.student_id = ?
                   ORDER BY l.dataset_rsr NULLS LAST""",
                [student_id, student_id, student_id],
            )
            for teacher, n, acc, rsr_value, selected in rows:
                table.add_row(
                    teacher,
                    str(n),
                    f"{acc:.1%}" if acc is not None else "-",
                    f"{rsr_value:.3f}" if rsr_value is not None else "-",
                    str(selected),
                )
            console.print(table)
        _, q = store.query("SELECT count(*) FROM quarantine")
        _, pubs = store.query(
            "SELECT name, path, n_rows, mlflow_run_id FROM publications ORDER BY created_at DESC LIMIT 1"
        )
    console.print(f"quarantined records: {q[0][0]} (rsr sql: SELECT * FROM quarantine)")
    if pubs:
        name, path, n_rows, mlflow_run_id = pubs[0]
        console.print(f"dataset:  {path}  ({n_rows} rows; datasets.load_from_disk)")
        console.print(f"MLflow run {mlflow_run_id}")
    console.print(f"DuckDB:   {st.duckdb}")
    console.print(f"MLflow:   {st.mlflow_uri}")
    console.print(f"  open the UI:  mlflow ui --backend-store-uri {st.mlflow_uri}")
    console.print(f"Prefect:  PREFECT_HOME={st.prefect_home}")
    console.print(f"  open the UI:  PREFECT_HOME={st.prefect_home} prefect server start")


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
