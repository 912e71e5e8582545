"""`rsr sql` is read-only by construction: after every attempt below, the database file (bytes and row counts)
and the file system are unchanged, and each write is refused with a message.

What guarantees it is the connection (read_only, external access off, configuration locked): tested alone with
the friendly check switched off. The check (rsr.sql.check_read_only) only refuses, before anything runs, the
statements that are not queries, so that the user reads why.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rsr.cli import app
from rsr.store import sql as sql_mod
from rsr.store.sql import SqlError, WriteRefused, check_read_only, run_query
from tests.support.hand_made_store import build_store

TABLES = ("runs", "problems", "trajectories", "quarantine", "duplicates", "verdicts", "students", "scores",
          "publications", "publication_items", "schema_version")  # fmt: skip

# (attack, does the read-only connection alone refuse it?, is it refused before running: not a query?).
# {tmp} is a folder the attacks try to write into. Not refused by the connection = harmless there (a no-op or
# session-only: CHECKPOINT, VACUUM, a TEMP table, SET VARIABLE, a read through query(), ...).
ATTACKS: list[tuple[str, bool, bool]] = [
    # plain writes, any case / spacing / comments
    ("INSERT INTO runs (run_id, flow_name, status, started_at) VALUES ('x', 'f', 's', now())", True, True),
    ("insert into problems select * from problems", True, True),
    ("UPDATE scores SET rsr = 0", True, True),
    ("  \n\t update   verdicts set verdict = 'correct'  ", True, True),
    ("DELETE FROM trajectories", True, True),
    ("-- just a comment\nDELETE FROM runs", True, True),
    ("/* harmless */ DrOp /* hidden */ TABLE runs", True, True),
    ("TRUNCATE quarantine", True, True),
    ("MERGE INTO runs USING (SELECT 'x' AS run_id) s ON runs.run_id = s.run_id WHEN MATCHED THEN DELETE", True, True),
    # DDL
    ("CREATE TABLE t AS SELECT 1 AS a", True, True),
    ("CREATE TEMP TABLE t (a INT)", False, True),
    ("CREATE VIEW v AS SELECT 1", True, True),
    ("CREATE OR REPLACE VIEW latest_scores AS SELECT 1 AS x", True, True),
    ("CREATE MACRO m(a) AS a + 1", True, True),
    ("CREATE SEQUENCE s", True, True),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", True, True),
    ("DROP VIEW teacher_leaderboard", True, True),
    ("ALTER TABLE runs ADD COLUMN x INT", True, True),
    # files, other databases, extensions
    ("COPY (SELECT 1) TO '{tmp}/x.csv'", True, True),
    ("COPY runs TO '{tmp}/runs.parquet' (FORMAT parquet)", True, True),
    ("COPY runs FROM '{tmp}/in.csv'", True, True),
    ("EXPORT DATABASE '{tmp}/export'", True, True),
    ("IMPORT DATABASE '{tmp}/export'", True, True),
    ("ATTACH ':memory:' AS m", True, True),
    ("ATTACH '{tmp}/other.duckdb' AS o", True, True),
    ("DETACH rsr", True, True),
    ("COPY FROM DATABASE rsr TO memory", True, True),
    ("INSTALL httpfs", True, True),
    ("LOAD httpfs", True, True),
    ("FORCE INSTALL httpfs", True, True),
    # settings and session state
    ("SET threads = 1", True, True),
    ("SET enable_external_access = true", True, True),
    ("RESET threads", True, True),
    ("PRAGMA threads = 1", True, True),
    ("PRAGMA enable_profiling", True, True),
    ("SET VARIABLE x = 1", False, True),
    ("USE memory", True, True),
    ("BEGIN TRANSACTION", False, True),
    ("PREPARE p AS DELETE FROM runs", False, True),
    ("EXECUTE p", True, True),
    # storage maintenance
    ("CHECKPOINT", False, True),
    ("FORCE CHECKPOINT", False, True),
    ("CALL checkpoint()", False, True),
    ("VACUUM", False, True),
    ("ANALYZE", False, True),
    # writes smuggled into something that looks like a read
    ("SELECT 1; DROP TABLE runs", True, True),
    ("SELECT * FROM runs;\n-- looks done\nINSERT INTO runs SELECT * FROM runs", True, True),
    ("WITH x AS (DELETE FROM runs RETURNING *) SELECT * FROM x", True, False),
    ("WITH x AS (INSERT INTO runs SELECT * FROM runs RETURNING *) SELECT count(*) FROM x", True, False),
    ("EXPLAIN ANALYZE DELETE FROM runs", True, False),
    ("/* x */ EXPLAIN ANALYZE /* y */ UPDATE scores SET rsr = 0", True, False),
    ("SELECT * FROM checkpoint()", False, False),
    ("SELECT nextval('s')", True, False),
    ("SELECT * FROM query('SELECT * FROM runs')", False, False),
    ("SELECT write_log('x')", False, False),
    # reading outside the database (refused by decision: rsr sql reads the state database only)
    ("SELECT * FROM read_csv('/etc/passwd')", True, False),
    ("SELECT * FROM \"READ_CSV\"('/etc/passwd')", True, False),
    ("SELECT * FROM read_text('/etc/hostname')", True, False),
    ("SELECT * FROM '/etc/passwd'", True, False),
    ("SELECT * FROM glob('/*')", True, False),
    ("DESCRIBE '/etc/passwd'", True, False),
    ("SUMMARIZE '{tmp}/x.csv'", True, False),
    ("SELECT * FROM read_parquet('https://example.com/x.parquet')", True, False),
    ("SELECT * FROM sniff_csv('/etc/passwd')", True, False),
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _counts(db: Path) -> dict[str, int]:
    res = run_query(db, " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in TABLES))
    return dict(res.rows)


def _files(*roots: Path) -> set[str]:
    return {str(p) for root in roots for p in root.rglob("*")}


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("sqlsec") / "home"
    db = build_store(home)
    target = tmp_path_factory.mktemp("sqlsec-target")
    return {"home": home, "db": db, "tmp": target, "sha": _sha(db), "counts": _counts(db)}


def _unchanged(state: dict, files_before: set[str]) -> None:
    db: Path = state["db"]
    assert _sha(db) == state["sha"], "the database file changed"
    assert _counts(db) == state["counts"]
    assert _files(state["home"], state["tmp"]) == files_before, "a file was created or removed"


def test_the_table_is_big_enough() -> None:
    assert len(ATTACKS) >= 25


@pytest.mark.parametrize(("attack", "engine_refuses", "not_a_query"), ATTACKS, ids=[a for a, _, _ in ATTACKS])
def test_write_attempt_is_refused_and_nothing_changes(
    state: dict, attack: str, engine_refuses: bool, not_a_query: bool
) -> None:
    sql = attack.format(tmp=state["tmp"])
    before = _files(state["home"], state["tmp"])
    if not_a_query:
        with pytest.raises(WriteRefused) as info:
            check_read_only(sql)
        assert info.value.reason and "refused" in str(info.value)
    else:
        check_read_only(sql)  # a query: the connection decides

    # `--` ends the options: a query may itself start with a `--` comment.
    out = CliRunner().invoke(app, ["sql", "--state", str(state["home"]), "--", sql])
    if not_a_query:
        assert out.exit_code == 2 and "refused (rsr sql is read-only)" in out.output, out.output
    elif engine_refuses:  # a write hidden in a query, or a file read: refused (or unknown, for a file name)
        assert out.exit_code == 2 and ("refused (rsr sql is read-only)" in out.output or "Error" in out.output)
    _unchanged(state, before)


@pytest.mark.parametrize(("attack", "engine_refuses", "_"), ATTACKS, ids=[a for a, _, _ in ATTACKS])
def test_the_connection_alone_cannot_write(state: dict, attack: str, engine_refuses: bool, _, monkeypatch) -> None:
    """Layer 2 on its own: with the guard switched off, nothing an attack does reaches the file or the disk."""
    monkeypatch.setattr(sql_mod, "check_read_only", lambda sql: None)
    sql = attack.format(tmp=state["tmp"])
    before = _files(state["home"], state["tmp"])
    try:
        run_query(state["db"], sql)
        refused = False
    except SqlError:  # WriteRefused (mapped from the engine's refusal) or another engine error
        refused = True
    if engine_refuses and ";" not in sql:
        assert refused, f"the read-only connection ran {sql!r}"
    _unchanged(state, before)
