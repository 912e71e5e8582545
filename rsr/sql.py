"""Read-only SQL over the state's DuckDB file: the library behind `rsr sql` (and `rsr report`).

Two public calls::

    check_read_only(sql)              # raises WriteRefused (statement + reason) unless every statement only reads
    run_query(db_path, sql)           # -> QueryResult(columns, rows, from_snapshot)

Defence in depth, so that a miss in one layer still cannot write:

1. The guard (``check_read_only``) parses with DuckDB's own parser (``duckdb.extract_statements``) and allows
   only SELECT statements (which include ``FROM t``, ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``,
   ``PIVOT`` inside a SELECT) and ``EXPLAIN [ANALYZE] <select>``. It then walks each SELECT's syntax tree
   (``json_serialize_sql``) so that a write hidden inside one (a CTE wrapping ``INSERT ... RETURNING``) is
   refused, and so are functions that write, change session state, run SQL text the guard cannot see, or read
   outside the database (files, URLs, environment): only the table functions in ``_TABLE_FUNCTIONS_OK`` may
   appear in FROM. A lexical pass over DuckDB's own tokens (comments and strings excluded) refuses write
   keywords anywhere as a last net.
2. The query then runs on a connection opened ``read_only=True`` with ``enable_external_access=false``
   (no files, no extensions, no ATTACH) and ``lock_configuration=true`` (no SET/PRAGMA can undo that).

Concurrency: DuckDB allows one read-write process; while it holds the file, another process cannot open it at
all. Our flows hold ``$RSR_HOME/writer.lock`` for their whole run and open the database once per task, so a
reader that slipped in between two tasks would make the flow's next open fail. Hence:

- if a flow holds ``writer.lock``: never touch the live file; answer from a snapshot (below);
- otherwise hold ``writer.lock`` shared while reading (a flow that starts meanwhile waits for us, it does not
  fail), and if the file is locked anyway (a notebook or script writing without the lock) retry with backoff
  for ``wait_s``, then answer from a snapshot.

A snapshot copies ``rsr.duckdb`` (+ ``rsr.duckdb.wal``) to a temporary folder, checks that neither changed
while copying (size + mtime before and after; else it copies again), opens the copy read-only (DuckDB replays
the WAL in memory and checks block checksums, so a torn copy fails to open and is retried) and deletes it after
the query. It shows every transaction committed before the copy; ``QueryResult.from_snapshot`` says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

# --------------------------------------------------------------------------------------------------------------
# The documented views: one line each. Their columns are read from the view definitions in rsr.store (the
# single source of truth), so `rsr sql --help`, docs/sql.md (checked by a test) and the views cannot drift.
# --------------------------------------------------------------------------------------------------------------
VIEW_DOCS: dict[str, str] = {
    "teacher_summary": "per teacher: trajectories, unique ones, verdict counts, accuracy = correct / all",
    "trajectory_verdicts": "every trajectory with its verdict (NULL if unverified) and the gold answer used",
    "score_history": "every score row (errors included) + teacher, problem, student ref, flow that wrote it",
    "latest_scores": "newest successful score per (trajectory, student) for the current metric version",
    "teacher_leaderboard": "per (student, teacher): dataset RSR = sum(mean_rank)/sum(mean_surprisal), accuracy",
    "dataset_lineage": "each published row -> its score row, scoring run, publishing run, MLflow run",
}

_view_columns_cache: dict[str, list[tuple[str, str]]] | None = None


def view_columns() -> dict[str, list[tuple[str, str]]]:
    """{view: [(column, type), ...]} from rsr.store's schema + view SQL, built in an in-memory DuckDB."""
    global _view_columns_cache
    if _view_columns_cache is None:
        from rsr.store import MIGRATIONS, view_sql

        con = duckdb.connect(":memory:")
        try:
            for migration in MIGRATIONS:
                con.execute(migration)
            out: dict[str, list[tuple[str, str]]] = {}
            for name, sql in view_sql().items():
                con.execute(f"CREATE VIEW {name} AS {sql}")
                out[name] = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {name}").fetchall()]
        finally:
            con.close()
        _view_columns_cache = out
    return _view_columns_cache


def views_help() -> str:
    """The views block of `rsr sql --help`: name, one-line meaning, columns."""
    lines = ["Views (see docs/sql.md; tables: runs, problems, trajectories, quarantine, duplicates, verdicts,"]
    lines.append("students, scores, publications, publication_items):")
    for name, cols in view_columns().items():
        lines.append(f"  {name}: {VIEW_DOCS.get(name, '')}")
        lines.append("      " + ", ".join(c for c, _ in cols))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Errors and results
# --------------------------------------------------------------------------------------------------------------


class SqlError(ValueError):
    """A query that cannot be run: empty, unparsable, more than one statement, or failed in DuckDB."""


class WriteRefused(SqlError):
    """A statement that could write (or reach outside the database) was refused; nothing was executed."""

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


# --------------------------------------------------------------------------------------------------------------
# The guard
# --------------------------------------------------------------------------------------------------------------

# Statement types that run a write or change state, with the reason shown to the user.
_TYPE_REASONS: dict[str, str] = {
    "INSERT": "INSERT writes rows",
    "UPDATE": "UPDATE writes rows",
    "DELETE": "DELETE writes rows",
    "MERGE_INTO": "MERGE writes rows",
    "CREATE": "CREATE defines objects (tables, views, macros, secrets)",
    "CREATE_FUNC": "CREATE FUNCTION/MACRO defines objects",
    "DROP": "DROP removes objects",
    "ALTER": "ALTER changes the schema",
    "COPY": "COPY reads or writes files",
    "COPY_DATABASE": "COPY FROM DATABASE writes a database",
    "EXPORT": "EXPORT DATABASE writes files",
    "ATTACH": "ATTACH opens other databases",
    "DETACH": "DETACH changes the attached databases",
    "LOAD": "INSTALL/LOAD fetches or loads extensions",
    "EXTENSION": "extension statements change the engine",
    "SET": "SET/RESET/USE change settings",
    "VARIABLE_SET": "SET VARIABLE changes session state",
    "PRAGMA": "PRAGMA can change settings (use the pragma_* table functions in a SELECT instead)",
    "CALL": "CALL runs procedures such as CHECKPOINT (use SELECT * FROM <table function>() instead)",
    "VACUUM": "VACUUM/ANALYZE rewrite storage or statistics",
    "TRANSACTION": "transaction control is not needed for one read",
    "PREPARE": "PREPARE defines session state (pass parameters instead)",
    "EXECUTE": "EXECUTE runs a prepared statement the guard cannot see",
    "MULTI": "this statement expands to several (e.g. a PIVOT statement creating an enum type); "
    "write it as SELECT ... FROM t PIVOT (...)",
}

# Table functions allowed in FROM: pure generators, the read-only catalog and pragma functions. Anything else
# (read_csv, read_parquet, read_text, glob, sniff_csv, parquet_*, query, query_table, checkpoint, the
# *_logging/profiling switches, the scans of other engines) is refused: they read files, run SQL the guard
# cannot see, or change state. Reading files is refused on purpose: `rsr sql` answers from the state database
# only; use duckdb itself for ad-hoc files.
_TABLE_FUNCTIONS_OK = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "json_each",
        "json_tree",
        "repeat",
        "repeat_row",
        "summary",
        "histogram",
        "histogram_values",
        "icu_calendar_names",
        "pg_timezone_names",
        "pragma_collations",
        "pragma_database_size",
        "pragma_metadata_info",
        "pragma_platform",
        "pragma_show",
        "pragma_storage_info",
        "pragma_table_info",
        "pragma_user_agent",
        "pragma_version",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_dependencies",
        "duckdb_extensions",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_memory",
        "duckdb_optimizers",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_settings",
        "duckdb_tables",
        "duckdb_temporary_files",
        "duckdb_types",
        "duckdb_variables",
        "duckdb_views",
    }
)

# Scalar functions refused anywhere: they advance sequences, write logs, read the environment, or are internal.
_SCALAR_REFUSED: dict[str, str] = {
    "nextval": "nextval advances a sequence",
    "setval": "setval changes a sequence",
    "write_log": "write_log writes to the log",
    "getenv": "getenv reads outside the database",
}
_SCALAR_REFUSED_PREFIXES: tuple[str, ...] = ("__internal", "read_", "json_execute")

# Keywords that have no place in a read query, wherever they appear (tokens only: comments and strings do not
# count). A column with such a name must be quoted ("load"). REPLACE and ANALYZE are read-safe (SELECT * REPLACE,
# EXPLAIN ANALYZE) and not listed.
_WRITE_KEYWORDS = frozenset(
    {
        "insert",
        "update",
        "delete",
        "merge",
        "create",
        "drop",
        "alter",
        "truncate",
        "copy",
        "export",
        "import",
        "attach",
        "detach",
        "install",
        "load",
        "pragma",
        "vacuum",
        "checkpoint",
    }
)

_QUERY_NODES_OK = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})
# A table name that is really a file or URL (DuckDB's replacement scans: FROM 'x.csv', FROM 's3://...').
_PATHLIKE = re.compile(r"[/\\:]|\.[A-Za-z0-9]{1,8}$|\*")

# One in-memory connection for parsing (json_serialize_sql); guarded by a lock: connections are not thread-safe.
_parser_lock = threading.Lock()
_parser_con: duckdb.DuckDBPyConnection | None = None


def _serialize(statement: str) -> dict[str, Any]:
    global _parser_con
    with _parser_lock:
        if _parser_con is None:
            _parser_con = duckdb.connect(":memory:")
        row = _parser_con.execute("SELECT json_serialize_sql(?)", [statement]).fetchone()
    return json.loads(row[0]) if row else {"error": True, "error_message": "no result"}


def _tokens(sql: str) -> list[tuple[str, str]]:
    """DuckDB's tokens as (text, kind): kind is keyword, identifier, string_const, comment, operator, ..."""
    toks = duckdb.tokenize(sql)
    out = []
    for i, (pos, kind) in enumerate(toks):
        end = toks[i + 1][0] if i + 1 < len(toks) else len(sql)
        out.append((sql[pos:end].strip(), getattr(kind, "name", str(kind))))
    return out


def _explain_target(statement: str) -> str | None:
    """The statement inside `EXPLAIN [ANALYZE] ...` (comments before/between skipped), or None if not that form."""
    toks = duckdb.tokenize(statement)
    i = 0
    words: list[str] = []
    while i < len(toks):
        pos, kind = toks[i]
        name = getattr(kind, "name", str(kind))
        if name == "comment":
            i += 1
            continue
        end = toks[i + 1][0] if i + 1 < len(toks) else len(statement)
        word = statement[pos:end].strip().lower()
        if not words and word == "explain":
            words.append(word)
        elif words == ["explain"] and word in ("analyze", "analyse"):
            words.append(word)
        else:
            return statement[pos:] if words else None
        i += 1
    return None


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _check_tree(statement: str, tree: dict[str, Any]) -> None:
    for node in _walk(tree):
        ntype = node.get("type")
        if "cte_map" in node and ntype not in _QUERY_NODES_OK:
            raise WriteRefused(statement, f"a {ntype} inside the query writes (e.g. a CTE wrapping INSERT/DELETE)")
        if isinstance(ntype, str) and ntype.endswith("_QUERY_NODE"):
            raise WriteRefused(statement, f"a {ntype} inside the query writes")
        if ntype == "TABLE_FUNCTION":
            fn = node.get("function") or {}
            name = str(fn.get("function_name", "")).lower()
            if name not in _TABLE_FUNCTIONS_OK:
                raise WriteRefused(
                    statement,
                    f"table function {name}() is not allowed: only the database's tables/views and read-only "
                    "generators/catalog functions may be read (no files, no SQL-in-a-string, no checkpoint)",
                )
        elif ntype in ("BASE_TABLE", "SHOW_REF"):  # SHOW_REF: DESCRIBE/SUMMARIZE <name>
            table = str(node.get("table_name", "")).strip('"')
            if _PATHLIKE.search(table):
                raise WriteRefused(statement, f"{table!r} looks like a file or URL; only the database can be read")
        elif node.get("class") == "FUNCTION" and "function_name" in node:
            name = str(node["function_name"]).lower()
            if name in _SCALAR_REFUSED:
                raise WriteRefused(statement, _SCALAR_REFUSED[name])
            if name.startswith(_SCALAR_REFUSED_PREFIXES):
                raise WriteRefused(statement, f"function {name}() reads outside the database or runs hidden SQL")


def _check_statement(statement: duckdb.Statement) -> None:
    text = statement.query
    stype = statement.type.name
    if stype == "EXPLAIN":
        target = _explain_target(text)
        if target is None:
            raise WriteRefused(text, "only EXPLAIN [ANALYZE] <SELECT ...> is allowed")
        inner = _parse(target)
        if len(inner) != 1:
            raise WriteRefused(text, "EXPLAIN takes exactly one statement")
        # EXPLAIN ANALYZE executes its target: it must pass the same checks as a bare statement.
        _check_statement(inner[0])
        return
    if stype != "SELECT":
        raise WriteRefused(text, _TYPE_REASONS.get(stype, f"{stype} statements are not read-only"))
    for word, kind in _tokens(text):
        if kind == "keyword" and word.lower() in _WRITE_KEYWORDS:
            raise WriteRefused(text, f"the keyword {word.upper()} has no place in a read-only query")
    tree = _serialize(text)
    if tree.get("error"):
        # A SELECT that DuckDB cannot serialize is one we cannot inspect: refuse rather than guess.
        raise WriteRefused(text, f"cannot inspect this statement ({tree.get('error_message')})")
    _check_tree(text, tree)


def _parse(sql: str) -> list[duckdb.Statement]:
    try:
        return list(duckdb.extract_statements(sql))
    except duckdb.Error as err:
        raise SqlError(f"cannot parse the query: {err}") from None


def check_read_only(sql: str) -> None:
    """Raise ``WriteRefused`` unless every statement in ``sql`` only reads the database; ``SqlError`` if unparsable.

    Nothing is executed. See the module docstring for what is allowed and why.
    """
    statements = _parse(sql)
    if not statements:
        raise SqlError("empty query: give one SELECT statement (e.g. SELECT * FROM teacher_leaderboard)")
    for statement in statements:
        _check_statement(statement)


# --------------------------------------------------------------------------------------------------------------
# Running a query: guarded connection, lock handling, snapshots
# --------------------------------------------------------------------------------------------------------------

# External access off: no files, no extensions, no ATTACH; locked so that no statement can turn it back on.
_GUARDED_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}


def _is_lock_error(err: duckdb.Error) -> bool:
    text = str(err).lower()
    # Another process holds the file (IOException), or this process has it open read-write (ConnectionException).
    return "could not set lock" in text or "conflicting lock" in text or "different configuration" in text


def _connect(path: Path, spill: Path) -> duckdb.DuckDBPyConnection:
    # Spill to our own temporary folder, not DuckDB's default `<db>.tmp` beside the database: a reader killed
    # mid-query must leave nothing in the state folder.
    return duckdb.connect(str(path), read_only=True, config={**_GUARDED_CONFIG, "temp_directory": str(spill)})


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _copy_stable(db: Path, dest: Path, budget_s: float = 20.0) -> None:
    """Copy db (+ .wal) into dest; retry until neither changed while copying (a writer may be mid-write).

    A flow commits once per shard, so quiet windows are frequent; the time budget covers a loaded machine."""
    deadline = time.monotonic() + budget_s
    attempt = 0
    while True:
        before = (_signature(db), _signature(_wal(db)))
        for name in (db.name, _wal(db).name):
            (dest / name).unlink(missing_ok=True)
        try:
            shutil.copyfile(db, dest / db.name)
            if before[1] is not None:
                shutil.copyfile(_wal(db), dest / _wal(db).name)
        except FileNotFoundError:
            pass  # the WAL was checkpointed away mid-copy: the signatures differ, so we copy again
        if (_signature(db), _signature(_wal(db))) == before:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(min(1.0, 0.02 * 2**attempt) * random.uniform(0.5, 1.0))  # jitter: don't beat in step with it
        attempt += 1
    raise SqlError(f"{db}: the database kept changing while a snapshot was copied; try again in a moment")


@contextmanager
def _snapshot(db: Path, work: Path, attempts: int = 4) -> Iterator[duckdb.DuckDBPyConnection]:
    dest = work / "snapshot"
    dest.mkdir()
    last: duckdb.Error | None = None
    for attempt in range(attempts):
        _copy_stable(db, dest)
        try:
            con = _connect(dest / db.name, work / "spill")
        except duckdb.Error as err:  # a torn copy fails DuckDB's checksums: copy again
            last = err
            time.sleep(0.1 * 2**attempt)
            continue
        try:
            yield con
        finally:
            con.close()
        return
    raise SqlError(f"{db}: could not open a consistent snapshot of the database ({last}); try again")


@contextmanager
def _writer_lock_shared(db: Path) -> Iterator[bool]:
    """Yield True while holding $RSR_HOME/writer.lock shared (no flow running), False if a flow holds it."""
    lock = db.parent / "writer.lock"
    if not lock.exists():
        yield True  # no flow ever ran here: nothing to coordinate with (and a reader creates no files)
        return
    with open(lock) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _writer_name(db: Path) -> str:
    try:
        return (db.parent / "writer.lock").read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextmanager
def open_read_only(
    db_path: str | os.PathLike, wait_s: float = 2.0
) -> Iterator[tuple[duckdb.DuckDBPyConnection, str | None]]:
    """A guarded read-only connection to the database, or to a snapshot of it: yields (connection, note).

    ``note`` is None for the live file, else says why a snapshot is read. Never raises a lock error.
    """
    db = Path(db_path).expanduser().resolve()
    if not db.exists():
        raise FileNotFoundError(f"{db}: no database yet; run `rsr demo` or a flow to create it")
    with tempfile.TemporaryDirectory(prefix="rsr-sql-") as tmp:
        yield from _open(db, Path(tmp), wait_s)


def _open(db: Path, work: Path, wait_s: float) -> Iterator[tuple[duckdb.DuckDBPyConnection, str | None]]:
    with _writer_lock_shared(db) as free:
        if free:
            deadline = time.monotonic() + wait_s
            delay = 0.05
            while True:
                try:
                    con = _connect(db, work / "spill")
                except duckdb.Error as err:
                    if not _is_lock_error(err):
                        raise SqlError(f"{db}: cannot open the database: {err}") from None
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
                    delay = min(delay * 2, 0.5)
                    continue
                try:
                    yield con, None
                finally:
                    con.close()
                return
            note = f"the database was locked by a writer for {wait_s:g}s"
        else:
            note = f"a flow is writing ({_writer_name(db)})"
    # Outside the shared writer.lock: copying does not block anybody.
    stamp = time.strftime("%H:%M:%S")
    with _snapshot(db, work) as con:
        yield con, f"{note}: answered from a snapshot copied at {stamp}"


def _refusal_from_engine(sql: str, err: duckdb.Error) -> SqlError:
    """Map the read-only connection's refusals onto WriteRefused (a guard miss caught by layer 2)."""
    text = str(err)
    markers = ("read-only mode", "disabled by configuration", "configuration has been locked", "Permission Error")
    if any(m in text for m in markers):
        return WriteRefused(sql, f"the read-only connection refused it: {text.splitlines()[0]}")
    return SqlError(str(err))


def run_query(
    db_path: str | os.PathLike,
    sql: str,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    wait_s: float = 2.0,
    timeout_s: float | None = None,
    max_rows: int | None = None,
) -> QueryResult:
    """Run one read-only statement on the DuckDB file at ``db_path``; see the module docstring.

    ``params`` fill ``?``/``$name`` placeholders. ``wait_s``: how long to retry a locked file before reading a
    snapshot. ``timeout_s``: interrupt the query after this long. ``max_rows``: keep at most this many rows
    (``truncated`` says if more existed). Raises ``WriteRefused`` (refused, nothing ran) or ``SqlError``.
    """
    check_read_only(sql)
    if len(_parse(sql)) != 1:
        raise SqlError("give one statement at a time (the query holds several)")
    with open_read_only(db_path, wait_s=wait_s) as (con, note):
        timer = threading.Timer(timeout_s, con.interrupt) if timeout_s else None
        if timer:
            timer.start()
        try:
            cur = con.execute(sql, params)
            columns = [d[0] for d in cur.description] if cur.description else []
            types = [str(d[1]) for d in cur.description] if cur.description else []
            if max_rows is None:
                rows, truncated = cur.fetchall(), False
            else:
                rows = cur.fetchmany(max_rows + 1)
                truncated = len(rows) > max_rows
                rows = rows[:max_rows]
        except duckdb.InterruptException:
            raise SqlError(f"the query ran longer than {timeout_s:g}s and was stopped") from None
        except duckdb.Error as err:
            raise _refusal_from_engine(sql, err) from None
        finally:
            if timer:
                timer.cancel()
    return QueryResult(columns, rows, from_snapshot=note is not None, note=note, truncated=truncated, types=types)


# --------------------------------------------------------------------------------------------------------------
# Output formats (the CLI's; here so that they are testable without a terminal)
# --------------------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None  # JSON has no NaN/inf
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)  # timestamps, decimals, UUIDs, blobs


def to_json(result: QueryResult) -> str:
    """A JSON array of row objects (NaN/inf as null, timestamps as ISO-like strings)."""
    return json.dumps([dict(zip(result.columns, map(_jsonable, r), strict=True)) for r in result.rows], indent=1)


def to_csv(result: QueryResult) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()
