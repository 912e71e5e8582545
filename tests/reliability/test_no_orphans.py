"""Nothing left behind: `rsr add-teacher`, `add-student` or `publish` SIGKILLed (only its own pid, as the OOM
killer would) while its Prefect server starts, and add-teacher midway through ingest, leave no process of theirs
running, and the re-run of add-teacher stores every record exactly once. A process is "theirs" when its
environment names the test's state folder (every child inherits RSR_HOME): another test's or helper's is not
counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rsr.store.queries import Reader
from tests.support.child_runs import child_env, wait_for

N_RECORDS = 4000


def _own_processes(home: Path) -> list[int]:
    """Live processes (zombies aside) whose environment has RSR_HOME=home."""
    marker = f"RSR_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().split(") ", 1)[1].startswith("Z"):
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def _children(pid: int) -> list[str]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [Path(f"/proc/{k}/cmdline").read_bytes().decode(errors="replace") for k in kids]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("orphans") / "teacher.jsonl"
    with open(path, "w") as fh:
        for i in range(N_RECORDS):
            turns = [
                {"role": "user", "content": f"problem {i}?"},
                {"role": "assistant", "content": os.urandom(3000).hex()},
            ]
            fh.write(json.dumps({"messages": turns}) + "\n")
    return path


def _add_teacher(teacher: Path, home: Path, log: Path, command: str = "add-teacher") -> subprocess.Popen:
    env = child_env(None, RSR_HOME=str(home))
    env.pop("PREFECT_API_URL", None)  # its own server, as at a person's shell
    args = {
        "add-teacher": ["add-teacher", "t", str(teacher), "--format", "messages", "--no-score"],
        "add-student": ["add-student", "smollm2-135m"],
        "publish": ["publish", "--student", "smollm2-135m"],
    }[command]
    cmd = [sys.executable, "-m", "rsr.cli", *args]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.parametrize(
    ("command", "when"),
    [("add-teacher", "server starting"), ("add-teacher", "mid-ingest"), ("add-student", "server starting"),
     ("publish", "server starting")],
)  # fmt: skip
def test_a_killed_command_leaves_no_process_and_the_rerun_stores_once(command, when, teacher, tmp_path):
    home = tmp_path / "home"
    log = tmp_path / "rsr.log"
    proc = _add_teacher(teacher, home, log, command)
    try:
        if when == "server starting":
            ready = lambda: any("uvicorn" in c for c in _children(proc.pid))  # noqa: E731
        else:
            ready = lambda: (home / "rsr.duckdb.wal").exists() or (home / "rsr.duckdb").exists()  # noqa: E731
        assert wait_for(ready, 240, proc), log.read_text()
        assert _own_processes(home), "the command and its server should be running"
        os.kill(proc.pid, signal.SIGKILL)  # the command alone, not its group: what it started must go by itself
        proc.wait(timeout=30)
        assert wait_for(lambda: not _own_processes(home), 30), [
            Path(f"/proc/{p}/cmdline").read_bytes() for p in _own_processes(home)
        ]
    finally:
        for pid in _own_processes(home):  # never leave one behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
    rerun = _add_teacher(teacher, home, log)
    assert rerun.wait(timeout=400) == 0, log.read_text()[-3000:]
    assert not _own_processes(home)
    with Reader.open(home / "rsr.duckdb") as reader:
        _, rows = reader.query("SELECT count(*), count(DISTINCT trajectory_id) FROM trajectories")
    assert rows == [(N_RECORDS, N_RECORDS)]
