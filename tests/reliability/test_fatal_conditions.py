"""Fatal conditions in one line: a corrupted, foreign, empty or cut-short DuckDB file, a read-only state folder, a
full disk, a user error. Each gives one line naming the cause (the traceback goes to a log file the line names)
and a non-zero exit; a database that fails its checks is never written to, and `rsr status` does not crash on it.

The read-only folder and the full disk are real mounts (a read-only bind mount, a small tmpfs): skipped where this
process may not mount."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rsr.records import Message, Trajectory
from rsr.store.connect import BLOCK_BYTES, HEADER_BYTES, DatabaseCorrupt, scan_all, writer_lock
from rsr.store.queries import Reader
from rsr.store.writer import Store
from tests.support import servers


def _garbage_in_every_block(db: Path, only: int | None = None) -> None:
    """Bytes past each block's checksum (or block `only`'s) overwritten: reading it fails its checksum."""
    with open(db, "r+b") as fh:
        for i, start in enumerate(range(HEADER_BYTES, db.stat().st_size, BLOCK_BYTES)):
            if only is not None and i != only:
                continue
            fh.seek(start + 64)
            fh.write(b"\xde\xad\xbe\xef" * 256)


SCAN_ALL = scan_all  # the real whole read, which a test counts

CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "zero bytes": lambda db: db.write_bytes(b""),
    "foreign file": lambda db: db.write_bytes(b"SQLite format 3\x00" + bytes(8192)),
    "header overwritten": lambda db: db.write_bytes(bytes(4096) + db.read_bytes()[4096:]),
    "cut in half, mid-block": lambda db: os.truncate(db, db.stat().st_size // 2 + 1000),
    "cut inside the headers": lambda db: os.truncate(db, 4096),
    "mid-file garbage": _garbage_in_every_block,
    "one garbage block mid-file": lambda db: _garbage_in_every_block(db, only=(db.stat().st_size // BLOCK_BYTES) // 2),
}


@pytest.fixture(scope="module")
def sound_db(tmp_path_factory) -> Path:
    """A real store with enough rows to fill several blocks."""
    db = tmp_path_factory.mktemp("sound") / "rsr.duckdb"
    with Store.open(db) as store:
        run = store.start_run("curate-teacher", {})
        trajs = [
            Trajectory.build(teacher="t", problem=f"problem {i}", source_file="/d/t.jsonl", source_line=i,
                             messages=[Message(role="user", content=f"problem {i}"),
                                       Message(role="assistant", content=os.urandom(1500).hex())])
            for i in range(600)
        ]  # fmt: skip
        store.add_trajectories(trajs, run)
    return db


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _rsr(args: list[str], home: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = servers.base_env(home / "prefect") | {"RSR_HOME": str(home), "RSR_DB_WAIT_S": "1"} | env
    full["PREFECT_LOGGING_LEVEL"] = "WARNING"
    cmd = [sys.executable, "-m", "rsr.cli", *args]
    return subprocess.run(cmd, env=full, cwd=cwd, capture_output=True, text=True, timeout=300)


def _one_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, f"rc {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_a_bad_database_is_refused_and_never_written(how, sound_db, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(sound_db, home / "rsr.duckdb")
    CORRUPTIONS[how](home / "rsr.duckdb")
    before = _digest(home)
    with pytest.raises(DatabaseCorrupt, match="nothing was written to it"):
        Store.open(home / "rsr.duckdb")
    with pytest.raises(DatabaseCorrupt):
        Reader.open(home / "rsr.duckdb")
    assert _digest(home) == before
    line = _one_line(_rsr(["status"], home, tmp_path), str(home / "rsr.duckdb"), "nothing was written to it")
    assert "Traceback" not in line and _digest(home) == before


def test_a_sound_database_is_checked_whole_once(sound_db, tmp_path):
    """A flow's writes (under the writer lock) leave the file's signature in writer.lock: the next opener skips the
    whole read while the file stays as its last writer left it, and reads it whole again once it changed."""
    db = tmp_path / "rsr.duckdb"
    shutil.copy(sound_db, db)
    with writer_lock(tmp_path, "flow test"):
        with Store.open(db) as store:
            store.start_run("curate-teacher", {})
    assert (tmp_path / "writer.lock").read_text().startswith("checked rsr.duckdb [(")
    with Reader.open(db) as reader:
        assert reader.query("SELECT count(*) FROM trajectories")[1] == [(600,)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rsr.duckdb", "writer.lock"]  # a reader makes no file
    _garbage_in_every_block(db)  # changed behind the writers' backs: read whole again, and refused
    with pytest.raises(DatabaseCorrupt, match="Corrupt database file"):
        Store.open(db)


def test_add_teacher_into_a_corrupted_database_is_one_line_and_writes_nothing(sound_db, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(sound_db, home / "rsr.duckdb")
    _garbage_in_every_block(home / "rsr.duckdb")
    before = hashlib.sha256((home / "rsr.duckdb").read_bytes()).hexdigest()
    teacher = tmp_path / "t.jsonl"
    teacher.write_text(
        json.dumps({"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]})
    )
    done = _rsr(["add-teacher", "t2", str(teacher), "--no-score"], home, tmp_path)
    line = _one_line(done, "Corrupt database file", "nothing was written to it", f"{home}/logs/rsr-")
    assert hashlib.sha256((home / "rsr.duckdb").read_bytes()).hexdigest() == before
    log = Path(line.rsplit("(log: ", 1)[1].rstrip(")"))
    assert "Traceback" in log.read_text() and "DatabaseCorrupt" in log.read_text()


def test_a_user_error_is_one_line_with_the_traceback_in_the_log(tmp_path):
    done = _rsr(["add-teacher", "t", str(tmp_path / "missing.jsonl"), "--no-score"], tmp_path / "home", tmp_path)
    line = _one_line(done, "input not found", "missing.jsonl")
    assert done.returncode == 2
    log = Path(line.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "home" / "logs" and "FileNotFoundError" in log.read_text()


@pytest.fixture
def mount(tmp_path) -> Iterator[Callable[..., Path]]:
    """mount(*args) -> a fresh mount point under tmp_path; unmounted afterwards. Skips where mounting fails."""
    points: list[Path] = []

    def do(*args: str) -> Path:
        point = tmp_path / f"mnt{len(points)}"
        point.mkdir()
        done = subprocess.run(["mount", *args, str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount here: {done.stderr.strip()}")
        points.append(point)
        return point

    yield do
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_a_read_only_state_folder_is_one_line(mount, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    ro = mount("--bind", str(home))
    if subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot remount read-only here")
    teacher = tmp_path / "t.jsonl"
    teacher.write_text("{}\n")
    done = _rsr(["add-teacher", "t", str(teacher), "--no-score"], ro, tmp_path)
    _one_line(done, f"the state folder {ro} is not writable (Read-only file system)")
    assert list(home.iterdir()) == []  # nothing written where it could not be


def test_a_full_disk_is_one_line(mount, tmp_path):
    """Full before the command (the check up front), and full midway (DuckDB's own error, as the cause)."""
    full = mount("-t", "tmpfs", "-o", "size=40m", "tmpfs")
    (full / "filler").write_bytes(bytes(39 << 20))
    teacher = tmp_path / "t.jsonl"
    teacher.write_text("{}\n")
    _one_line(_rsr(["add-teacher", "t", str(teacher), "--no-score"], full / "home", tmp_path), "disk full")
    (full / "filler").unlink()
    big = tmp_path / "big.jsonl"  # ~48 MB of trajectories into 40 MB
    with open(big, "w") as fh:
        for i in range(6000):
            turns = [
                {"role": "user", "content": f"problem {i}?"},
                {"role": "assistant", "content": os.urandom(4000).hex()},
            ]
            fh.write(json.dumps({"messages": turns}) + "\n")
    done = _rsr(["add-teacher", "t", str(big), "--no-score"], full / "home", tmp_path)
    _one_line(done, "disk full", "No space left on device")
    # Room again (the tmpfs grown): the database a full disk interrupted is whole, taken as it is, and takes more.
    subprocess.run(["mount", "-o", "remount,size=200m", str(full)], check=True)
    small = tmp_path / "small.jsonl"
    small.write_text(
        json.dumps({"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]})
    )
    again = _rsr(["add-teacher", "small", str(small), "--no-score"], full / "home", tmp_path)
    assert again.returncode == 0, again.stderr


def test_a_database_locked_by_another_program_is_one_line(sound_db, tmp_path):
    """Another program (say the duckdb shell) holds the file read-write: the command waits RSR_DB_WAIT_S, then
    says who holds it, in one line."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(sound_db, home / "rsr.duckdb")
    hold = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(600)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(home / "rsr.duckdb")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        teacher = tmp_path / "t.jsonl"
        teacher.write_text("{}\n")
        done = _rsr(["add-teacher", "t", str(teacher), "--no-score"], home, tmp_path)
        _one_line(done, "the database is locked by another process", "Could not set lock", f"PID {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


def test_the_next_writer_skips_the_whole_read_of_an_unchanged_file(sound_db, tmp_path, monkeypatch):
    """As a new process would (this process's memory of checked files cleared): it takes writer.lock, finds there
    the signature its predecessor left, and reads the file whole only if the file changed since."""
    from rsr.store import connect

    db = tmp_path / "rsr.duckdb"
    shutil.copy(sound_db, db)
    reads = []
    monkeypatch.setattr(connect, "scan_all", lambda con, path: reads.append(path) or SCAN_ALL(con, path))
    for expected in (1, 1, 2):
        if expected == 2:
            os.utime(db)  # touched behind the writers' backs: a new signature, so a whole read
        connect._sound.clear()
        with writer_lock(tmp_path, "flow test"), Store.open(db) as store:
            store.start_run("curate-teacher", {})
        assert len(reads) == expected
