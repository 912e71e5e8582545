"""One writer per state folder: flows that write take this lock; a second one waits, then exits clearly.

How long a second writer waits: ``wait_s``, else ``$RSR_LOCK_WAIT_S``, else 600 s (0 = fail at once)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class StateBusy(RuntimeError):
    pass


_held: dict[Path, int] = {}  # re-entrant within a process: a flow's subflows share their parent's lock


DEFAULT_WAIT_S = 600.0


def lock_wait_s() -> float:
    """$RSR_LOCK_WAIT_S (seconds a second writer waits for the state folder), else DEFAULT_WAIT_S."""
    raw = os.environ.get("RSR_LOCK_WAIT_S", "").strip()
    if not raw:
        return DEFAULT_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"RSR_LOCK_WAIT_S={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise ValueError(f"RSR_LOCK_WAIT_S={raw!r}: expected a number of seconds >= 0")
    return value


@contextmanager
def writer_lock(root: Path, what: str, wait_s: float | None = None) -> Iterator[bool]:
    """An OS file lock (released by the kernel if the holder is killed, so a crash never leaves it stuck).

    Yields True for the outermost holder in this process, False for a re-entrant (nested flow) one."""
    if wait_s is None:
        wait_s = lock_wait_s()
    root.mkdir(parents=True, exist_ok=True)
    path = (root / "writer.lock").resolve()
    if _held.get(path):
        _held[path] += 1
        try:
            yield False
        finally:
            _held[path] -= 1
        return
    with open(path, "a+") as fh:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "another process"
                    raise StateBusy(
                        f"{root} is busy: {holder} is writing to it; waited {wait_s:.0f}s. "
                        "Try again when it finishes, wait longer (RSR_LOCK_WAIT_S=seconds) or use another RSR_HOME."
                    ) from None
                time.sleep(0.5)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} ({what})")
        fh.flush()
        _held[path] = 1
        try:
            yield True
        finally:
            _held[path] = 0
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
