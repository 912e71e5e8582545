"""`rsr sql` and rsr.sql on a real DuckDB file made with rsr.store.Store: views, formats, --file, the CLI, and
reading while another process holds the write lock (retry, then snapshot)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rsr.cli import app
from rsr.store.connect import writer_lock
from rsr.store.sql import VIEW_DOCS, SqlError, WriteRefused, check_read_only, run_query, view_columns
from rsr.store.writer import Store
from tests.support.hand_made_store import STUDENT_ID, STUDENT_REF, build_store


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("sql") / "home")


runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, ["sql", *args])


# ---- library -------------------------------------------------------------------------------------------------


def test_run_query_reads_the_views(db: Path) -> None:
    res = run_query(db, "SELECT teacher, dataset_rsr, accuracy, n, rank FROM teacher_selection ORDER BY rank")
    assert res.columns == ["teacher", "dataset_rsr", "accuracy", "n", "rank"]
    # accuracy over the rows ranked: alpha's failed third trajectory has no score
    assert res.rows == [("alpha-teacher", pytest.approx(1.5), 1.0, 2, 1),
                        ("beta-teacher", pytest.approx(5.0), pytest.approx(0.5), 2, 2)]  # fmt: skip
    assert not res.from_snapshot and res.note is None

    res = run_query(db, "SELECT count(*) FILTER (WHERE error IS NOT NULL), count(*) FROM score_history")
    assert res.rows == [(1, 5)]
    res = run_query(db, "SELECT dataset_name, teacher, count(*) FROM dataset_lineage GROUP BY ALL")
    assert res.rows == [("tiny-sft", "alpha-teacher", 2)]


def test_params_max_rows_and_read_only_statements(db: Path) -> None:
    res = run_query(
        db, "SELECT teacher FROM latest_scores WHERE student_ref = ? AND rsr > ? ORDER BY rsr", [STUDENT_REF, 1.5]
    )
    assert [r[0] for r in res.rows] == ["alpha-teacher", "beta-teacher", "beta-teacher"]  # 2.0, 4.0, 6.0
    res = run_query(db, "FROM trajectories ORDER BY teacher", max_rows=2)
    assert len(res.rows) == 2 and res.truncated
    # DESCRIBE / SHOW / SUMMARIZE / EXPLAIN / pragma table functions are reads.
    assert ("rsr", "DOUBLE") in [(r[0], r[1]) for r in run_query(db, "DESCRIBE latest_scores").rows]
    assert "teacher_selection" in [r[0] for r in run_query(db, "SHOW TABLES").rows]
    assert run_query(db, "SUMMARIZE scores").rows
    assert run_query(db, "EXPLAIN SELECT * FROM runs").rows
    assert run_query(db, "SELECT name FROM pragma_table_info('quarantine') WHERE name = 'reason'").rows == [("reason",)]


def test_errors_are_clear(db: Path, tmp_path: Path) -> None:
    with pytest.raises(SqlError, match="empty query"):
        run_query(db, "  -- nothing\n ;")
    with pytest.raises(SqlError, match="cannot parse"):
        run_query(db, "SELEC 1")
    with pytest.raises(SqlError, match="one statement at a time"):
        run_query(db, "SELECT 1; SELECT 2")
    with pytest.raises(SqlError, match="does not exist"):
        run_query(db, "SELECT * FROM no_such_table")
    with pytest.raises(SqlError, match="ran longer than 0.3s"):
        run_query(db, "SELECT sum(hash(a)) FROM range(100000000000) t(a)", timeout_s=0.3)
    with pytest.raises(FileNotFoundError, match="no database yet"):
        run_query(tmp_path / "absent.duckdb", "SELECT 1")
    with pytest.raises(WriteRefused) as info:
        check_read_only("SELECT 1;\n  DELETE FROM runs")
    assert info.value.statement == "DELETE FROM runs" and "DELETE" in info.value.reason


# ---- CLI -----------------------------------------------------------------------------------------------------


def test_cli_formats(db: Path) -> None:
    q = "SELECT teacher, dataset_rsr, n FROM teacher_selection ORDER BY dataset_rsr"
    table = _cli(q, "--state", str(db.parent))
    assert table.exit_code == 0, table.output
    assert "alpha-teacher" in table.output and "dataset_rsr" in table.output and "2 rows" in table.output

    out = _cli(q, "--state", str(db.parent), "--format", "csv")
    assert out.exit_code == 0, out.output
    rows = list(csv.reader(io.StringIO(out.stdout)))
    assert rows[0] == ["teacher", "dataset_rsr", "n"] and rows[1][0] == "alpha-teacher" and float(rows[1][1]) == 1.5

    out = _cli(
        "SELECT teacher, started_at, 'nan'::DOUBLE AS x, NULL AS y FROM runs JOIN teacher_summary ON true LIMIT 1",
        "--state", str(db.parent), "--format", "json",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert set(data[0]) == {"teacher", "started_at", "x", "y"} and data[0]["x"] is None and data[0]["y"] is None


def test_cli_file_params_and_env_state(db: Path, tmp_path: Path, monkeypatch) -> None:
    q = tmp_path / "q.sql"
    q.write_text("-- per teacher, for one student\nSELECT teacher, count(*) AS n\nFROM latest_scores\n"
                 "WHERE student_id = ?\nGROUP BY teacher ORDER BY teacher;\n")  # fmt: skip
    monkeypatch.setenv("RSR_HOME", str(db.parent))  # no --state: $RSR_HOME
    out = _cli("--file", str(q), "-p", STUDENT_ID, "--format", "csv")
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == ["teacher,n", "alpha-teacher,2", "beta-teacher,2"]

    bad = tmp_path / "bad.sql"
    bad.write_text("SELECT 1;\n/* sneaky */ UPDATE scores SET rsr = 0;\n")
    out = _cli("-f", str(bad))
    assert out.exit_code == 2 and "refused" in out.output and "UPDATE" in out.output


def test_cli_usage_errors(db: Path, tmp_path: Path) -> None:
    state = ["--state", str(db.parent)]
    assert "one of them" in _cli(*state).output
    assert "one of them" in _cli("SELECT 1", "--file", str(tmp_path / "q.sql"), *state).output
    assert "cannot read the query file" in _cli("--file", str(tmp_path / "absent.sql"), *state).output
    out = runner.invoke(app, ["sql", "SELECT 1", "--format", "xml", *state], env={"COLUMNS": "200"})
    assert out.exit_code == 2 and "'xml' is not one of 'table', 'csv', 'json'" in out.output
    out = _cli("SELECT 1", "--state", str(tmp_path / "empty"))
    assert out.exit_code == 2 and "no database yet" in out.output
    assert not (tmp_path / "empty").exists()  # a read never creates the state folder


def test_help_lists_every_view_with_its_columns(tmp_path: Path) -> None:
    # One source of truth: the columns come from rsr.store's migrations; every view has a one-line doc.
    with Store.open(tmp_path / "rsr.duckdb") as store:
        _, views = store.query("SELECT view_name FROM duckdb_views() WHERE NOT internal")
    assert set(VIEW_DOCS) == {v for (v,) in views}
    out = runner.invoke(app, ["sql", "--help"], env={"COLUMNS": "250"})
    assert out.exit_code == 0
    docs = (Path(__file__).resolve().parents[2] / "docs" / "sql.md").read_text()
    # Rich wraps long cells: compare with the borders and whitespace taken out.
    flat = re.sub(r"[\s│┃]", "", out.output)
    for view, cols in view_columns().items():
        assert view in out.output and re.sub(r"\s", "", VIEW_DOCS[view]) in flat
        assert ",".join(c for c, _ in cols) in flat
        assert f"`{view}`" in docs  # and docs/sql.md documents it
    assert [c for c, _ in view_columns()["teacher_selection"]] == [
        "student_id", "student_ref", "student_label", "teacher", "dtype", "max_tokens", "r_max", "dataset_rsr", "n",
        "accuracy", "mean_response_tokens", "rank", "n_ingested", "n_scored", "n_failed", "n_truncated", "on_subset",
        "reasoning_tokens", "answer_tokens", "tool_tokens", "dropped_tool_calls", "rsr_length_spearman"]  # fmt: skip


# ---- concurrency: another process writing ----------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from rsr.store.writer import Store
    from rsr.records import Message, Trajectory
    db, hold_s, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    with Store.open(db) as store:
        if mode == "add":  # committed (to the WAL), never checkpointed while we hold the file
            t = Trajectory.build(teacher="late-teacher", problem="p?", source_file="x", source_line=1,
                                 messages=[Message(role="user", content="p?"), Message(role="assistant", content="a")])
            store.add_trajectories([t], None)
        print("ready", flush=True)
        if mode == "churn":  # keep committing and checkpointing while readers copy snapshots
            i, end = 0, time.monotonic() + hold_s
            while time.monotonic() < end:
                t = Trajectory.build(teacher="churn", problem=f"p{i}", source_file="x", source_line=i,
                                     messages=[Message(role="user", content=f"p{i}"),
                                               Message(role="assistant", content="a" * 2000)])
                store.add_trajectories([t], None)
                if i % 25 == 0:
                    store._con.execute("CHECKPOINT")
                i += 1
                time.sleep(0.01)  # far more often than a flow commits (once per shard), yet not a busy loop
        else:
            time.sleep(hold_s)
    """
)


def _hold(db: Path, seconds: float, mode: str = "hold") -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), str(seconds), mode], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def own_db(tmp_path: Path) -> Path:
    return build_store(tmp_path / "home")


def test_rsr_sql_answers_while_another_process_holds_the_write_lock(own_db: Path) -> None:
    holder = _hold(own_db, 120, mode="add")  # holds far longer than the read needs; killed right after it
    try:
        out = subprocess.run(
            [str(Path(sys.executable).with_name("rsr")), "sql", "--state", str(own_db.parent), "--wait", "0.5",
             "--format", "csv", "SELECT teacher, count(*) AS n FROM trajectories GROUP BY ALL ORDER BY teacher"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert holder.poll() is None, "the writer must still hold the file while we read"
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 0, out.stderr
    assert "lock" not in out.stdout.lower()
    # The snapshot includes the writer's committed-but-not-checkpointed row (replayed from the copied WAL).
    assert out.stdout.splitlines() == ["teacher,n", "alpha-teacher,3", "beta-teacher,2", "late-teacher,1"]
    assert "snapshot" in out.stderr and "locked by a writer" in out.stderr


def test_waits_for_a_short_writer_instead_of_copying(own_db: Path) -> None:
    holder = _hold(own_db, 1.0)
    try:
        res = run_query(own_db, "SELECT count(*) FROM trajectories", wait_s=20)
    finally:
        holder.wait(timeout=30)
    assert res.rows == [(5,)] and not res.from_snapshot  # the retry/backoff got the live file back


def test_a_running_flow_is_never_blocked_by_a_reader(own_db: Path) -> None:
    home = own_db.parent
    with writer_lock(home, "flow pipeline"):  # what every writing flow holds for its whole run
        res = run_query(own_db, "SELECT count(*) FROM trajectories", wait_s=30)
        # Straight to a snapshot: opening the live file between two of the flow's tasks could fail its next open.
        assert res.from_snapshot and "flow pipeline" in (res.note or "")
    assert res.rows == [(5,)]
    with writer_lock(home, "next flow", wait_s=0):  # the reader left no lock behind
        pass
    assert sorted(p.name for p in home.iterdir()) == ["rsr.duckdb", "writer.lock"]  # snapshot removed


def test_snapshots_stay_consistent_while_a_writer_commits_and_checkpoints(own_db: Path) -> None:
    holder = _hold(own_db, 300, mode="churn")  # churns until killed below, however slow the reads are
    counts = []
    try:
        while len(counts) < 8:
            assert holder.poll() is None, "the writer stopped early"
            res = run_query(own_db, "SELECT count(*), count(DISTINCT trajectory_id) FROM trajectories", wait_s=0)
            assert res.from_snapshot
            n, distinct = res.rows[0]
            assert n == distinct  # no half-applied or doubly replayed transaction
            counts.append(n)
    finally:
        holder.kill()
        holder.wait()
    assert counts == sorted(counts) and counts[-1] > 5


def test_same_process_writer_falls_back_to_a_snapshot(own_db: Path) -> None:
    # DuckDB refuses a second, differently configured open of a file this process holds read-write.
    with Store.open(own_db) as store:
        store.start_run("notebook", {})  # committed, still in the WAL
        res = run_query(own_db, "SELECT flow_name FROM runs WHERE flow_name = 'notebook'", wait_s=0.2)
    assert res.from_snapshot and res.rows == [("notebook",)]
