"""`rsr sql` is read-only by construction: every write attempt below is refused with a message, and the database
file (bytes and row counts) and the file system are unchanged afterwards.

Two layers are tested separately: the guard (rsr.sql.check_read_only, which refuses before anything runs), and
the guarded connection (read_only, external access off, configuration locked) with the guard switched off, so
that a miss in the first layer still cannot write.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_sql import build_store  # tests/ is on sys.path (pytest prepends the rootdir of each test package)
from typer.testing import CliRunner

from rsr import sql as sql_mod
from rsr.cli import app
from rsr.sql import SqlError, WriteRefused, check_read_only, run_query

TABLES = ("runs", "problems", "trajectories", "quarantine", "duplicates", "verdicts", "students", "scores",
          "publications", "publication_items", "schema_version")  # fmt: skip

# (attack, does the read-only connection alone refuse it?). {tmp} is a folder the attacks try to write into.
# False = harmless there (no-op or session-only: CHECKPOINT, VACUUM, a TEMP table, SET VARIABLE, ...), but the
# guard still refuses it and the file is still unchanged.
ATTACKS: list[tuple[str, bool]] = [
    # plain writes, any case / spacing / comments
    ("INSERT INTO runs (run_id, flow_name, status, started_at) VALUES ('x', 'f', 's', now())", True),
    ("insert into problems select * from problems", True),
    ("UPDATE scores SET rsr = 0", True),
    ("  \n\t update   verdicts set verdict = 'correct'  ", True),
    ("DELETE FROM trajectories", True),
    ("-- just a comment\nDELETE FROM runs", True),
    ("/* harmless */ DrOp /* hidden */ TABLE runs", True),
    ("TRUNCATE quarantine", True),
    ("MERGE INTO runs USING (SELECT 'x' AS run_id) s ON runs.run_id = s.run_id WHEN MATCHED THEN DELETE", True),
    # DDL
    ("CREATE TABLE t AS SELECT 1 AS a", True),
    ("CREATE TEMP TABLE t (a INT)", False),
    ("CREATE VIEW v AS SELECT 1", True),
    ("CREATE OR REPLACE VIEW latest_scores AS SELECT 1 AS x", True),
    ("CREATE MACRO m(a) AS a + 1", True),
    ("CREATE SEQUENCE s", True),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", True),
    ("DROP VIEW teacher_leaderboard", True),
    ("ALTER TABLE runs ADD COLUMN x INT", True),
    # files, other databases, extensions
    ("COPY (SELECT 1) TO '{tmp}/x.csv'", True),
    ("COPY runs TO '{tmp}/runs.parquet' (FORMAT parquet)", True),
    ("COPY runs FROM '{tmp}/in.csv'", True),
    ("EXPORT DATABASE '{tmp}/export'", True),
    ("IMPORT DATABASE '{tmp}/export'", True),
    ("ATTACH ':memory:' AS m", True),
    ("ATTACH '{tmp}/other.duckdb' AS o", True),
    ("DETACH rsr", True),
    ("COPY FROM DATABASE rsr TO memory", True),
    ("INSTALL httpfs", True),
    ("LOAD httpfs", True),
    ("FORCE INSTALL httpfs", True),
    # settings and session state
    ("SET threads = 1", True),
    ("SET enable_external_access = true", True),
    ("RESET threads", True),
    ("PRAGMA threads = 1", True),
    ("PRAGMA enable_profiling", True),
    ("SET VARIABLE x = 1", False),
    ("USE memory", True),
    ("BEGIN TRANSACTION", False),
    ("PREPARE p AS DELETE FROM runs", False),
    ("EXECUTE p", True),
    # storage maintenance
    ("CHECKPOINT", False),
    ("FORCE CHECKPOINT", False),
    ("CALL checkpoint()", False),
    ("VACUUM", False),
    ("ANALYZE", False),
    # writes smuggled into something that looks like a read
    ("SELECT 1; DROP TABLE runs", True),
    ("SELECT * FROM runs;\n-- looks done\nINSERT INTO runs SELECT * FROM runs", True),
    ("WITH x AS (DELETE FROM runs RETURNING *) SELECT * FROM x", True),
    ("WITH x AS (INSERT INTO runs SELECT * FROM runs RETURNING *) SELECT count(*) FROM x", True),
    ("EXPLAIN ANALYZE DELETE FROM runs", True),
    ("/* x */ EXPLAIN ANALYZE /* y */ UPDATE scores SET rsr = 0", True),
    ("SELECT * FROM checkpoint()", False),
    ("SELECT nextval('s')", True),
    ("SELECT * FROM query('SELECT * FROM runs')", False),
    ("SELECT write_log('x')", False),
    # reading outside the database (refused by decision: rsr sql reads the state database only)
    ("SELECT * FROM read_csv('/etc/passwd')", True),
    ("SELECT * FROM \"READ_CSV\"('/etc/passwd')", True),
    ("SELECT * FROM read_text('/etc/hostname')", True),
    ("SELECT * FROM '/etc/passwd'", True),
    ("SELECT * FROM glob('/*')", True),
    ("DESCRIBE '/etc/passwd'", True),
    ("SUMMARIZE '{tmp}/x.csv'", True),
    ("SELECT * FROM read_parquet('https://example.com/x.parquet')", True),
    ("SELECT * FROM sniff_csv('/etc/passwd')", True),
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


@pytest.mark.parametrize(("attack", "engine_refuses"), ATTACKS, ids=[a for a, _ in ATTACKS])
def test_write_attempt_is_refused_and_nothing_changes(state: dict, attack: str, engine_refuses: bool) -> None:
    sql = attack.format(tmp=state["tmp"])
    before = _files(state["home"], state["tmp"])
    with pytest.raises(WriteRefused) as info:
        check_read_only(sql)
    assert info.value.reason and "refused" in str(info.value)

    # `--` ends the options: a query may itself start with a `--` comment.
    out = CliRunner().invoke(app, ["sql", "--state", str(state["home"]), "--", sql])
    assert out.exit_code == 2 and "refused (rsr sql is read-only)" in out.output, out.output
    _unchanged(state, before)


@pytest.mark.parametrize(("attack", "engine_refuses"), ATTACKS, ids=[a for a, _ in ATTACKS])
def test_the_connection_alone_cannot_write(state: dict, attack: str, engine_refuses: bool, monkeypatch) -> None:
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
