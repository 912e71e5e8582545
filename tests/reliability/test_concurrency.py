"""Two pipelines on one state folder at once, a third that will not wait, and readers throughout.

- Two `rsr run` started together: one takes the writer lock, the other waits for it and then finds nothing left
  to do; a third started with RSR_LOCK_WAIT_S=1 exits at once (exit code 2) with a message naming the folder,
  the holder and how to wait longer.
- While they run, readers keep asking: `rsr sql` (its library call, rsr.sql.run_query, which answers from a
  snapshot while a flow holds the lock, plus one real `rsr sql` command) and a plain read-only Store.open, the
  way a notebook or dashboard reads; every read answers, and none makes the writer fail.
- The database ends as after a single run: each trajectory once, one score per key, one publication.
"""

from __future__ import annotations

import importlib.util
import time

import pytest

from tests.support.child_runs import RSR, child_env, count, duplicate_score_keys, finish, fresh_state, small_demo, spawn

N_PROBLEMS = 3  # x 3 teachers = 9 trajectories (+1 malformed line)


def _holder(lock) -> str:
    try:
        return lock.read_text().strip()
    except OSError:
        return ""


def _wait_for_a_pipeline_to_hold(lock, procs) -> None:
    deadline = time.monotonic() + 300
    while "pid" not in _holder(lock) and time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    holder = _holder(lock)
    assert "flow pipeline" in holder, f"no pipeline took the lock: {holder!r}"


def _impatient_run_is_refused(run, state, prefect_api_url, tmp_path) -> None:
    """A third run with RSR_LOCK_WAIT_S=1 exits at once (2), its last line naming the folder, holder and remedy."""
    impatient = spawn(run, child_env(prefect_api_url, RSR_LOCK_WAIT_S="1"), tmp_path / "c.log")
    rc, log = finish(impatient, timeout=180)
    assert rc == 2, log[-3000:]
    # the last line says what happened and what to do (Prefect logs the failed flow run above it)
    last = log.strip().splitlines()[-1]
    assert last.startswith(f"error: {state} is busy: pid ") and "(flow pipeline)" in last, log[-3000:]
    assert "RSR_LOCK_WAIT_S" in last


def _read_until_done(db, procs, has_sql: bool) -> tuple[int, int, list]:
    """Read the database as rsr.sql and a notebook would, until every pipeline exited: (answers, opens, counts)."""
    from rsr.store.queries import Reader

    answers, store_reads, counts = 0, 0, []
    while any(p.poll() is None for p in procs):
        if has_sql and db.exists():
            from rsr.store.sql import run_query

            result = run_query(db, "SELECT (SELECT count(*) FROM trajectories), (SELECT count(*) FROM scores)")
            counts.append(result.rows[0])
            answers += 1
        if db.exists():
            with Reader.open(db) as store:  # a notebook's read: the writer must not fail
                store.query("SELECT count(*) FROM scores")
                time.sleep(0.05)
            store_reads += 1
        time.sleep(0.1)
    return answers, store_reads, counts


def _assert_as_after_one_run(db) -> None:
    n = 3 * N_PROBLEMS
    assert count(db, "SELECT count(*) FROM trajectories") == n
    assert count(db, "SELECT count(*) FROM scores") == n
    assert duplicate_score_keys(db) == 0
    assert count(db, "SELECT count(*) FROM quarantine") == 1
    assert count(db, "SELECT count(*) FROM publications") == 1
    assert count(db, "SELECT count(*) FROM runs WHERE flow_name = 'pipeline' AND status = 'completed'") == 2
    assert count(db, "SELECT count(*) FROM runs WHERE status <> 'completed'") == 0
    # the run that waited found nothing left to do: every score row belongs to one pipeline run
    assert count(db, "SELECT count(DISTINCT run_id) FROM scores") == 1


@pytest.mark.slow
def test_two_pipelines_at_once_on_one_state_folder(tmp_path, mlflow_template, prefect_api_url):
    config = small_demo(tmp_path / "data", N_PROBLEMS)
    state = fresh_state(tmp_path / "state", mlflow_template)
    db, lock = state / "rsr.duckdb", state / "writer.lock"
    env = child_env(prefect_api_url)
    run = [str(RSR), "run", str(config), "--state", str(state)]
    first, second = spawn(run, env, tmp_path / "a.log"), spawn(run, env, tmp_path / "b.log")
    procs = [first, second]
    try:
        _wait_for_a_pipeline_to_hold(lock, procs)
        _impatient_run_is_refused(run, state, prefect_api_url, tmp_path)

        has_sql = importlib.util.find_spec("rsr.store.sql") is not None
        sql_cli = spawn([str(RSR), "sql", "SELECT count(*) AS n FROM trajectories", "--format", "json",
                         "--state", str(state)], env, tmp_path / "sql.log") if has_sql else None  # fmt: skip
        answers, store_reads, counts = _read_until_done(db, procs, has_sql)
        codes = [finish(p, timeout=60) for p in procs]
        for rc, log in codes:
            assert rc == 0, log[-3000:]
        if sql_cli is not None:
            rc, log = finish(sql_cli, timeout=120)
            assert rc == 0 and '"n"' in log, log[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                finish(p, timeout=1)

    assert store_reads > 0 and (answers > 0 or not has_sql)
    # readers saw the data only grow: committed states, never a torn one
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(counts, counts[1:], strict=False))
    _assert_as_after_one_run(db)
    print(f"\nconcurrency: 2 pipelines + 1 impatient run; {answers} rsr.sql answers, {store_reads} read-only opens")


def test_a_flow_open_waits_for_a_reader_instead_of_failing(tmp_path, monkeypatch):
    """DuckDB refuses a read-write open while another process reads the file; Store.open waits it out."""
    import subprocess
    import sys
    import threading

    import duckdb

    from rsr.store.writer import Store

    db = tmp_path / "rsr.duckdb"
    Store.open(db).close()
    hold = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); print('open', flush=True); "
    # The reader closes when told to (a line on stdin), so the open below must wait for it, however busy the box.
    wait_then_close = "sys.stdin.readline(); c.close(); print('closed', flush=True); time.sleep(30)"
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    reader = subprocess.Popen([sys.executable, "-c", hold + wait_then_close, str(db)], **pipes)
    try:
        assert reader.stdout.readline().strip() == "open"
        with pytest.raises(duckdb.IOException, match="Could not set lock"):  # DuckDB's own rule, as said
            duckdb.connect(str(db)).close()
        threading.Timer(1.0, lambda: (reader.stdin.write("go\n"), reader.stdin.flush())).start()
        with Store.open(db) as store:  # what every task of a flow does: waits, then opens
            store.start_run("test", {})
        assert reader.stdout.readline().strip() == "closed"  # it could only open once the reader had closed
    finally:
        reader.kill()
        reader.wait()
    monkeypatch.setenv("RSR_DB_WAIT_S", "0.2")  # a reader that stays: a clear error after the wait
    reader = subprocess.Popen(
        [sys.executable, "-c", hold + "time.sleep(30)", str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert reader.stdout.readline().strip() == "open"
        with pytest.raises(Exception, match=r"waited 0.2s .* set RSR_DB_WAIT_S to wait longer"):
            Store.open(db)
    finally:
        reader.kill()
        reader.wait()
