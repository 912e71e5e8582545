"""rsr.store.connect: the one retry policy and the state folder's writer lock (DuckDB itself:
tests/integration/test_store_writer_and_views.py and test_sql_reads.py)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsr.store.connect import StateBusy, open_read_only, retry, writer_lock


def test_retry_retries_only_what_it_is_told_and_stops_at_the_budget() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise BlockingIOError("busy")
        return "done"

    assert retry(flaky, budget_s=600, retry_on=lambda e: isinstance(e, BlockingIOError)) == "done"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(ValueError):  # not a retryable error: raised at once
        retry(lambda: calls.append(1) or int("x"), budget_s=600, retry_on=lambda e: isinstance(e, BlockingIOError))
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(BlockingIOError):  # a spent budget still makes one attempt, then raises the last error
        retry(flaky, budget_s=0, retry_on=lambda e: True)
    assert len(calls) == 1


def test_writer_lock_is_reentrant_and_refuses_a_second_process(tmp_path: Path) -> None:
    with writer_lock(tmp_path, "flow outer") as outer, writer_lock(tmp_path, "flow inner") as inner:
        assert (outer, inner) == (True, False)  # a subflow shares its parent's lock
        assert (tmp_path / "writer.lock").read_text() == f"pid {os.getpid()} (flow outer)"
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from rsr.store.connect import writer_lock\n"
             "with writer_lock(Path(sys.argv[1]), 'second', wait_s=0): pass", str(tmp_path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert other.returncode != 0
        assert f"StateBusy: {tmp_path} is busy: pid" in other.stderr and "(flow outer)" in other.stderr
        assert "RSR_LOCK_WAIT_S" in other.stderr
    with writer_lock(tmp_path, "next", wait_s=0) as again:  # released on exit, and the holder text cleared
        assert again
    assert (tmp_path / "writer.lock").read_text() == ""


def test_state_busy_names_the_holder_in_process(tmp_path: Path, monkeypatch) -> None:
    # The same check without a subprocess: a lock held through another open file description.
    (tmp_path / "writer.lock").write_text("pid 1 (flow pipeline)")
    with open(tmp_path / "writer.lock") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        monkeypatch.setenv("RSR_LOCK_WAIT_S", "0")
        with pytest.raises(StateBusy, match=r"is busy: pid 1 \(flow pipeline\)"):
            with writer_lock(tmp_path, "second"):
                pass


def test_read_only_needs_an_existing_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no database yet"):
        with open_read_only(tmp_path / "absent.duckdb"):
            pass
    assert list(tmp_path.iterdir()) == []  # a reader creates nothing
