"""Read-only commands: `rsr sql` (rsr/store/sql.py) and `rsr report` (rsr/report/page.py). No apply_env: a read
creates no state folder."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Annotated

import typer

from rsr.cli.app import app
from rsr.cli.errors import fail, user_errors
from rsr.cli.options import (
    ChatTemplateOpt,
    MlflowOpt,
    OutputFormat,
    RevisionOpt,
    StateOpt,
    StudentOpt,
    TemplateKwargsOpt,
    student_spec,
)


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
    format: Annotated[OutputFormat, typer.Option("--format", metavar="table|csv|json")] = OutputFormat.table,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="VALUE", help="value for the next ? placeholder (repeatable)"),
    ] = None,
    wait: Annotated[float, typer.Option(help="seconds to retry a locked database before reading a snapshot")] = 2.0,
    timeout: Annotated[float | None, typer.Option(help="stop the query after this many seconds")] = None,
    max_rows: Annotated[int | None, typer.Option(help="keep at most this many rows")] = None,
    state_folder: StateOpt = None,
) -> None:
    """A read-only SQL query on the state's DuckDB.

    Writes are refused; works while a flow is writing."""
    from rsr.settings import StateDir
    from rsr.store.sql import SqlError, run_query, to_csv, to_json

    if (query is None) == (file is None):
        fail('give the query as an argument or with --file (one of them), e.g. rsr sql "SELECT * FROM runs"')
    if file is not None:
        try:
            query = file.read_text(encoding="utf-8")
        except OSError as err:
            fail(f"{file}: cannot read the query file: {err.strerror or err}")
    home = StateDir.from_env(state_folder)
    params = [_sql_param(p) for p in param] if param else None
    with user_errors(SqlError, FileNotFoundError):
        result = run_query(home.duckdb, query or "", params, wait_s=wait, timeout_s=timeout, max_rows=max_rows)
    if result.note:
        typer.secho(f"note: {result.note}", fg=typer.colors.YELLOW, err=True)
    if format is OutputFormat.csv:
        typer.echo(to_csv(result), nl=False)
    elif format is OutputFormat.json:
        typer.echo(to_json(result))
    else:
        _print_table(result)
    if result.truncated:
        typer.secho(f"note: only the first {max_rows} rows are shown (--max-rows)", fg=typer.colors.YELLOW, err=True)


def _print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=False)
    numeric = re.compile(r"^(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|DOUBLE|FLOAT|REAL|DECIMAL)\b", re.IGNORECASE)
    for col, typ in zip(result.columns, result.types, strict=True):
        table.add_column(Text(col), overflow="fold", justify="right" if numeric.match(typ) else "left")
    for row in result.rows:
        table.add_row(*(Text("NULL" if v is None else str(v)) for v in row))  # values as typed, never markup
    console = Console()
    console.print(table)
    console.print(f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}", style="dim")


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="folder for the PNGs and report.html")],
    student: StudentOpt = "smollm2-135m",
    revision: RevisionOpt = None,
    chat_template: ChatTemplateOpt = None,
    chat_template_kwargs: TemplateKwargsOpt = None,
    mlflow: Annotated[
        bool, typer.Option("--mlflow/--no-mlflow", help="log the files to the latest publication's MLflow run")
    ] = True,
    mlflow_uri: MlflowOpt = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="also each teacher's lowest/highest-RSR trajectory, token by token")
    ] = False,
    state_folder: StateOpt = None,
) -> None:
    """Plots and one HTML page for a registered student.

    RSR per teacher, RSR vs accuracy, selection, score history."""
    from rsr.cli.score import load_named
    from rsr.report.page import build_report
    from rsr.settings import StateDir

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    spec = student_spec(student, revision, chat_template, chat_template_kwargs)
    home = StateDir.from_env(state_folder)
    with user_errors(ValueError, FileNotFoundError):  # an SqlError is a ValueError
        model = load_named(spec, home, stored=True) if explain else None
        result = build_report(home, spec, out, log_to_mlflow=mlflow, mlflow_uri=mlflow_uri, explain_with=model)
    for path in [*result.pages, *result.pngs, result.html]:
        typer.echo(f"wrote {path}")
    for warning in result.warnings:
        typer.secho(f"note: {warning}", fg=typer.colors.YELLOW, err=True)
    if result.mlflow_run_id:
        typer.echo(f"logged to MLflow run {result.mlflow_run_id} under report/")
