"""Read-only SQL over the state's DuckDB file: the library behind `rsr sql`.

    run_query(db_path, sql)    # -> QueryResult(columns, rows, from_snapshot, ...)

What makes it read-only is the connection (``rsr.store.connect.open_read_only``): ``read_only``, external access off (no
files, URLs, extensions or ATTACH) and the configuration locked, so no statement can write or turn that back
on; the engine's refusals come back as ``WriteRefused``. ``check_read_only`` only gives a friendly message
before anything runs for statements that are not queries (INSERT, CREATE, SET, COPY, ...).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import duckdb

from rsr.store import connect as db
from rsr.store.connect import open_read_only

# The documented views, one line each; their columns are read from the migrations (rsr.store), so that
# `rsr sql --help`, docs/sql.md (checked by a test) and the views cannot drift.
VIEW_DOCS: dict[str, str] = {
    "registrations": "every registered student: its id, model, label (ref, template, options), template digest",
    "teacher_summary": "per teacher: trajectories, unique ones, verdict counts, accuracy = correct / all",
    "trajectory_verdicts": "every trajectory with its verdict (NULL if unverified) and the gold answer used",
    "score_history": "every score row (errors included) + teacher, problem, student ref and label, flow that wrote it",
    "latest_scores": "the successful score per (trajectory, student, dtype, max_tokens, r_max), current metric, "
    "with the companion metrics of the same pass (mean_entropy, top1_share)",
    "score_settings": "per student and scoring setting (dtype, max_tokens, r_max): scored and truncated counts",
    "teacher_selection": "per student, setting and teacher: dataset RSR, n, accuracy, mean response tokens, rank, "
    "coverage (ingested, scored, failed, truncated, on_subset), reasoning/answer/tool tokens, and "
    "rsr_length_spearman (trajectory RSR vs response tokens)",
    "teacher_coverage": "per student, setting and teacher: trajectories ingested, scored, failed, truncated, unscored",
    "dataset_lineage": "each published row -> its score row, scoring run, publishing run, MLflow run",
    "ingest_log": "per ingest run and source file: records = stored + repeats + quarantined, near duplicates, "
    "the format read, the column of each field and the turns dropped after the last assistant turn",
    "contamination": "each trajectory holding a registered benchmark's problem: the benchmark, its row, the method "
    "(exact, ngram, ngram_numbers), the text that matched and the share of the problem's n-grams found",
    "contamination_log": "per teacher and benchmark: trajectories (and problems) holding one of its problems, "
    "by method",
}


@cache
def view_columns() -> dict[str, list[tuple[str, str]]]:
    """{view: [(column, type), ...]} for the documented views, from rsr.store's migrations run in memory."""
    with duckdb.connect(":memory:") as con:
        for migration in db.MIGRATIONS:
            con.execute(migration)
        return {name: [(r[0], r[1]) for r in con.execute(f"DESCRIBE {name}").fetchall()] for name in VIEW_DOCS}


# How the engine words a refusal by the guarded connection.
_REFUSALS = ("read-only mode", "disabled by configuration", "configuration has been locked", "Permission Error")


class SqlError(ValueError):
    """A query that cannot be run: empty, unparsable, more than one statement, or failed in DuckDB."""


class WriteRefused(SqlError):
    """A statement that could write (or reach outside the database) was refused; nothing was changed."""

    def __init__(self, statement: str, reason: str) -> None:
        self.statement = statement.strip()
        self.reason = reason
        shown = " ".join(self.statement.split())
        shown = shown if len(shown) <= 200 else shown[:197] + "..."
        super().__init__(f"refused (rsr sql is read-only): {reason}\n  statement: {shown}")


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    from_snapshot: bool = False
    note: str | None = None  # why a snapshot was used, for the user
    truncated: bool = False  # max_rows cut the result
    types: list[str] = field(default_factory=list)


def check_read_only(sql: str) -> None:
    """Raise ``WriteRefused`` for a statement that is not a query (SELECT, FROM, DESCRIBE, SHOW, SUMMARIZE,
    EXPLAIN ...), ``SqlError`` if ``sql`` is empty, unparsable or several statements. Nothing is executed; the
    connection refuses whatever gets past this (a write hidden in a CTE, a file read): clear messages only."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise SqlError(f"cannot parse the query: {err}") from None
    if not statements:
        raise SqlError("empty query: give one SELECT statement (e.g. SELECT * FROM teacher_selection)")
    for statement in statements:
        kind = statement.type.name
        if kind not in ("SELECT", "EXPLAIN"):
            raise WriteRefused(statement.query, f"{kind} is not a query; rsr sql only reads (use SELECT ...)")
    if len(statements) != 1:
        raise SqlError("give one statement at a time (the query holds several)")


def run_query(
    db_path: str | os.PathLike,
    sql: str,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    wait_s: float = 2.0,
    timeout_s: float | None = None,
    max_rows: int | None = None,
) -> QueryResult:
    """Run one read-only statement on the DuckDB file at ``db_path``.

    ``params`` fill ``?``/``$name`` placeholders. ``wait_s``: how long to retry a locked file before reading a
    snapshot. ``timeout_s``: interrupt the query after this long. ``max_rows``: keep at most this many rows
    (``truncated`` says if more existed). Raises ``WriteRefused`` (refused, nothing changed) or ``SqlError``.
    """
    check_read_only(sql)
    with ExitStack() as stack:
        try:
            con, note = stack.enter_context(open_read_only(db_path, wait_s=wait_s))
        except (duckdb.Error, RuntimeError) as err:  # could not open the file or a snapshot
            raise SqlError(f"{db_path}: cannot open the database: {err}") from None
        timer = threading.Timer(timeout_s or 0, con.interrupt)
        if timeout_s:
            timer.start()
        try:
            cur = con.execute(sql, params)
            description = cur.description or []
            rows = cur.fetchall() if max_rows is None else cur.fetchmany(max_rows + 1)
        except duckdb.InterruptException:
            raise SqlError(f"the query ran longer than {timeout_s:g}s and was stopped") from None
        except duckdb.Error as err:  # the read-only connection's refusals as WriteRefused, the rest as SqlError
            if any(m in str(err) for m in _REFUSALS):
                raise WriteRefused(sql, f"the read-only connection refused it: {str(err).splitlines()[0]}") from None
            raise SqlError(str(err)) from None
        finally:
            timer.cancel()
    truncated = max_rows is not None and len(rows) > max_rows
    columns, types = [d[0] for d in description], [str(d[1]) for d in description]
    return QueryResult(columns, rows[:max_rows], note is not None, note, truncated, types)


# ---- output formats (the CLI's; here so that they are testable without a terminal) ----------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value  # timestamps, decimals, UUIDs, blobs: str() by to_json


def to_json(result: QueryResult) -> str:
    """A JSON array of row objects (NaN/inf as null, timestamps as ISO-like strings)."""
    rows = [dict(zip(result.columns, map(_jsonable, r), strict=True)) for r in result.rows]
    return json.dumps(rows, indent=1, default=str)


def to_csv(result: QueryResult) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows(result.rows)  # None is written as an empty field
    return buf.getvalue()
