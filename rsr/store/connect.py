"""The one way to reach the state database: connect, retry and lock, once.

``connect`` (waits while another process holds the DuckDB file), ``writer_lock`` (the state folder's
single-writer lock, ``$RSR_HOME/writer.lock``, held by every writing flow for its whole run) and
``open_read_only`` (a guarded connection: the engine itself refuses every write) share one retry policy,
``retry``. How long to wait: ``$RSR_LOCK_WAIT_S`` (a second writer, default 600 s; 0 = fail at once) and
``$RSR_DB_WAIT_S`` (a locked DuckDB file, default 60 s).

Why readers take the writer lock shared: DuckDB allows one read-write process, and while it holds the file no
other process can open it. Flows open the file once per task, so a reader slipping in between two tasks would
make the flow's next open wait. Hence a reader never touches the live file while a flow holds ``writer.lock``
(it copies a snapshot: ``rsr.duckdb`` + ``.wal``, re-copied until neither changed, opened read-only so DuckDB
replays the WAL and checks block checksums); otherwise it holds the lock shared, so a flow starting meanwhile
waits for the read instead of failing.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from rsr.settings import settings

T = TypeVar("T")

# External access off: no files, no extensions, no ATTACH; locked so that no statement can turn it back on.
GUARDED_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}


# Ordered, append-only: never edit a shipped file, add a new one. File i (sorted) is schema version i. Views are
# created by migrations too (CREATE OR REPLACE VIEW in a new file redefines one), never at open.
MIGRATIONS = [p.read_text(encoding="utf-8") for p in sorted(Path(__file__).with_name("migrations").glob("*.sql"))]
SCHEMA_VERSION = len(MIGRATIONS)
# The metric version the views were written for (checked by a test against rsr.metric.METRIC_VERSION).
VIEWS_METRIC_VERSION = "rsr-v1"


class StateBusy(RuntimeError):
    """Another flow holds the state folder's writer lock (and kept it longer than we would wait)."""


class DatabaseCorrupt(RuntimeError):
    """The database file fails its checks (empty, foreign, cut short, a block that fails its checksum): it is never
    opened for writing."""


# ---- the retry policy ----------------------------------------------------------------------------------------


def retry(attempt: Callable[[], T], budget_s: float, retry_on: Callable[[BaseException], bool]) -> T:
    """``attempt()`` until it succeeds, retrying errors that ``retry_on`` accepts for ``budget_s`` seconds.

    Backoff doubles from 20 ms to 0.5 s, jittered so that two waiters do not retry in step. The last error is
    raised when the budget is spent (at least one attempt is always made)."""
    deadline = time.monotonic() + budget_s
    delay = 0.02
    while True:
        try:
            return attempt()
        except Exception as err:
            left = deadline - time.monotonic()
            if not retry_on(err) or left <= 0:
                raise
            time.sleep(min(delay * random.uniform(0.5, 1.0), left))
            delay = min(delay * 2, 0.5)


def is_lock_error(err: BaseException) -> bool:
    """Another process holds the file (IOException), or this process has it open otherwise (ConnectionException)."""
    markers = ("could not set lock", "conflicting lock", "different configuration")
    return isinstance(err, duckdb.Error) and any(m in str(err).lower() for m in markers)


# ---- connections ---------------------------------------------------------------------------------------------


def connect(
    path: Path, read_only: bool, config: dict[str, Any] | None = None, wait_s: float | None = None
) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, waiting up to ``wait_s`` (default $RSR_DB_WAIT_S) while another process holds the file."""
    wait_s = settings().db_wait_s if wait_s is None else wait_s
    if not read_only:
        ensure_sound(path, wait_s)
    try:
        return retry(lambda: duckdb.connect(str(path), read_only=read_only, config=config or {}), wait_s, is_lock_error)
    except duckdb.Error as err:
        if not is_lock_error(err):
            raise
        raise type(err)(
            f"{err}\n(waited {wait_s:g}s for the other process to close {path}; set RSR_DB_WAIT_S to wait longer)"
        ) from None


# ---- the file's checks ---------------------------------------------------------------------------------------

# A DuckDB file: three 4 KiB headers (bytes 8-12 of the first: "DUCK"), then 256 KiB blocks, each holding a
# checksum that DuckDB verifies when it reads the block (a block cut short fails its read).
HEADER_BYTES = 3 * 4096
BLOCK_BYTES = 262144
MAGIC = b"DUCK"
SCAN_MEMORY = "256MB"  # DuckDB's cache while scan_all reads the whole file (its default, 80% of RAM, keeps it all)
SCAN_ROWS = 2048  # DuckDB's vector: ~60 MB of one column of 30 KB traces
ADVICE = "restore it from a backup, or move it aside to start a new one; nothing was written to it"
_sound: set[Path] = set()  # files this process has checked whole (and since written itself)


def check_file(path: Path) -> None:
    """Refuse, before DuckDB opens it, a file that is empty, not DuckDB's, or cut short (a stat and 12 bytes)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(12)
    except FileNotFoundError:
        return  # a new database
    if size == 0:
        raise DatabaseCorrupt(f"{path} is empty (0 bytes), not a DuckDB database: {ADVICE}")
    if head[8:12] != MAGIC:
        raise DatabaseCorrupt(f"{path} is not a DuckDB database (a foreign or overwritten file): {ADVICE}")
    if size < HEADER_BYTES:  # a tail short of whole blocks may be an extension a full disk cut: the whole read
        raise DatabaseCorrupt(f"{path} is cut short ({size} bytes, less than its headers): {ADVICE}")


def _signatures(path: Path) -> str:
    """What the file (and its WAL) look like now: size, mtime, inode."""
    sig = [(s.st_size, s.st_mtime_ns, s.st_ino) if (s := _stat(p)) else None for p in (path, _wal(path))]
    return f"checked {path.name} {sig}"


def _stat(p: Path) -> os.stat_result | None:
    try:
        return p.stat()
    except FileNotFoundError:
        return None


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _checked_before(path: Path) -> bool:
    """The file passed the whole read as it is now, or since then only this process wrote it (under the lock).
    A free writer.lock holds the signature of the database as its last writer left it (no other file is made)."""
    path = path.resolve()
    lock = path.parent / "writer.lock"
    if lock in _held:  # ours now: it holds our pid; what the last writer left was read when we took it
        return path in _sound or _left.get(lock) == _signatures(path)
    try:
        return lock.read_text(encoding="utf-8") == _signatures(path)
    except OSError:
        return False


def scan_all(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Read every column of every table, so that DuckDB verifies each data block's checksum: a column at a time
    in batches of SCAN_ROWS (batches of 65,536 whole rows held ~2 GB of long traces at once)."""
    columns = con.execute(
        "SELECT schema_name, table_name, column_name FROM duckdb_columns() c JOIN duckdb_tables() t "
        "USING (database_name, schema_name, table_name) WHERE NOT t.internal ORDER BY ALL"
    ).fetchall()
    try:
        for schema, table, column in columns:
            for _ in con.sql(f'SELECT "{column}" FROM "{schema}"."{table}"').to_arrow_reader(SCAN_ROWS):
                pass
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as err:
        raise DatabaseCorrupt(f"{path} is corrupted ({str(err).splitlines()[0]}): {ADVICE}") from None


def _scan(path: Path, memory: str | None, wait_s: float | None) -> None:
    config = dict(GUARDED_CONFIG, **({"memory_limit": memory} if memory else {}))
    try:
        con = connect(path, read_only=True, config=config, wait_s=wait_s)
    except duckdb.Error as err:
        if is_lock_error(err):
            raise
        raise DatabaseCorrupt(f"{path} cannot be opened ({str(err).splitlines()[0]}): {ADVICE}") from None
    with con:
        scan_all(con, path)


def ensure_sound(path: Path, wait_s: float | None = None) -> None:
    """Before a write: the cheap checks always; the whole read (every block's checksum) unless this file, as it is
    now, passed it before. A file that fails is never opened read-write."""
    path = Path(path)
    check_file(path)
    if not path.exists():
        _sound.add(path.resolve())  # created now, by us
        return
    if not _checked_before(path):
        try:
            _scan(path, SCAN_MEMORY, wait_s)
        except (duckdb.OutOfMemoryException, OSError) as err:  # pyarrow's reader raises DuckDB's errors as OSError
            if "Out of Memory" not in str(err):
                raise
            _scan(path, None, wait_s)  # a value too long for the cap: no sign of corruption; again, uncapped
    _sound.add(path.resolve())  # under the writer lock: its release records the file as sound


# ---- the writer lock -----------------------------------------------------------------------------------------

_held: set[Path] = set()  # re-entrant within a process: a flow's subflows share their parent's lock
_left: dict[Path, str] = {}  # what a free writer.lock held when this process took it


@contextmanager
def writer_lock(root: Path, what: str, wait_s: float | None = None) -> Iterator[bool]:
    """An OS file lock (released by the kernel if the holder is killed, so a crash never leaves it stuck).

    Yields True for the outermost holder in this process, False for a re-entrant (nested flow) one."""
    wait_s = settings().lock_wait_s if wait_s is None else wait_s
    root.mkdir(parents=True, exist_ok=True)
    path = (root / "writer.lock").resolve()
    if path in _held:
        yield False
        return
    with open(path, "a+") as fh:
        try:
            retry(
                lambda: fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB), wait_s, lambda e: isinstance(e, BlockingIOError)
            )
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise StateBusy(
                f"{root} is busy: {holder} is writing to it; waited {wait_s:.0f}s. "
                "Try again when it finishes, wait longer (RSR_LOCK_WAIT_S=seconds) or use another RSR_HOME."
            ) from None
        fh.seek(0)
        _left[path] = fh.read()  # the signature the last writer left (checked by _checked_before)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} ({what})")
        fh.flush()
        _held.add(path)
        try:
            yield True
        finally:
            _held.discard(path)
            fh.seek(0)
            fh.truncate()
            # What we wrote under the lock, checked whole before, is sound: the next process need not read it whole.
            fh.write(next((_signatures(db) for db in _sound if db.parent == path.parent), ""))
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _writer_lock_shared(db: Path) -> Iterator[str | None]:
    """Hold writer.lock shared while reading; yields None if free, else the busy flow's description."""
    lock = db.parent / "writer.lock"
    if not lock.exists():
        yield None  # no flow ever ran here: nothing to coordinate with (and a reader creates no files)
        return
    with open(lock) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            yield f"a flow is writing ({fh.read().strip() or 'another process'})"
            return
        try:
            yield None
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---- guarded read-only access --------------------------------------------------------------------------------


@contextmanager
def open_read_only(
    db_path: str | os.PathLike, wait_s: float = 2.0
) -> Iterator[tuple[duckdb.DuckDBPyConnection, str | None]]:
    """A guarded read-only connection to the database, or to a snapshot of it: yields (connection, note).

    ``note`` is None for the live file, else says why a snapshot is read. ``wait_s``: how long to retry a file
    another process holds before reading a snapshot. Never raises a lock error."""
    db = Path(db_path).expanduser().resolve()
    if not db.exists():
        raise FileNotFoundError(f"{db}: no database yet; run `rsr demo` or a flow to create it")
    # Spill to our own temporary folder, not DuckDB's default `<db>.tmp` beside the database: a reader killed
    # mid-query must leave nothing in the state folder.
    with tempfile.TemporaryDirectory(prefix="rsr-read-") as tmp:
        config = {**GUARDED_CONFIG, "temp_directory": str(Path(tmp) / "spill")}
        check_file(db)
        with _writer_lock_shared(db) as busy:
            if busy is None:
                try:
                    con = connect(db, read_only=True, config=config, wait_s=wait_s)
                except duckdb.Error as err:
                    if not is_lock_error(err):
                        raise DatabaseCorrupt(f"{db} cannot be opened ({str(err).splitlines()[0]}): {ADVICE}") from None
                    busy = f"the database was locked by a writer for {wait_s:g}s"
                else:
                    with con:
                        if not _checked_before(db):  # changed since it was last checked whole: check it now
                            scan_all(con, db)
                        yield con, None
                    return
        # Outside the shared writer.lock: copying does not block anybody.
        # A flow commits once per shard, so quiet windows are frequent; the budget covers a loaded machine.
        stamp = time.strftime("%H:%M:%S")
        try:
            copy = partial(_copy_and_open, db, Path(tmp) / "snapshot", config)
            con = retry(copy, 20.0, lambda err: isinstance(err, _Changed | duckdb.Error))
        except (_Changed, duckdb.Error) as err:
            raise RuntimeError(f"{db}: could not copy a consistent snapshot ({err}); try again in a moment") from None
        with con:
            yield con, f"{busy}: answered from a snapshot copied at {stamp}"


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


class _Changed(RuntimeError):
    """The database changed while it was being copied."""


def _copy_and_open(db: Path, dest: Path, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    wal = db.with_name(db.name + ".wal")
    before = (_signature(db), _signature(wal))
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    try:
        shutil.copyfile(db, dest / db.name)
        if before[1] is not None:
            shutil.copyfile(wal, dest / wal.name)
    except FileNotFoundError:
        pass  # the WAL was checkpointed away mid-copy: the signatures differ below
    if (_signature(db), _signature(wal)) != before:
        raise _Changed(f"{db} changed while it was copied")
    # A torn copy fails DuckDB's checksums here (a duckdb.Error): it is copied again.
    return duckdb.connect(str(dest / db.name), read_only=True, config=config)


# ---- the schema ------------------------------------------------------------------------------------------


def check_schema(con: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> int:
    """The file's schema version; refuses a file newer than this code (or, read-only, older)."""
    # fetchall, not fetchone: a half-read result would block the next Arrow registration on this connection.
    [(exists,)] = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchall()
    current = int(con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] or 0) if exists else 0
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"{path}: schema version {current} is newer than this code ({SCHEMA_VERSION}); upgrade rsr-curate"
        )
    if read_only and current < SCHEMA_VERSION:
        raise RuntimeError(
            f"{path}: schema version {current} is older than this code ({SCHEMA_VERSION}); "
            "open it read-write once (any flow run does) to migrate"
        )
    return current


def migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Apply the migrations the file lacks, each in one transaction with its schema_version row."""
    current = check_schema(con, path, read_only=False)
    for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
        con.begin()
        try:
            con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
            con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, datetime.now(UTC).replace(tzinfo=None)])
        except BaseException:
            con.rollback()
            raise
        con.commit()
