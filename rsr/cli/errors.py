"""Failures, one line on the terminal and the whole story in a log file.

`rsr` (main) sends every log record, Prefect's tracebacks included, to <state>/logs/ instead of the terminal, and
turns any failure into one line naming its cause and that file. Tests calling `app` in-process keep Prefect's.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer

LOG: dict[str, Path] = {}  # "main": set under `rsr`; "path": the log file once one is open
MIN_FREE_BYTES = 32 << 20  # below this the state folder is "full": Prefect's and MLflow's SQLite fail midway


def fail(message: str) -> NoReturn:
    log = LOG.get("path")  # set under `rsr` (main) once a flow may have logged its traceback there
    typer.secho(f"error: {message}" + (f" (log: {log})" if log else ""), fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@contextmanager
def user_errors(*types: type[Exception]) -> Iterator[None]:
    """The errors a user can fix (by default: a bad file or value, a busy state folder) as one clear line."""
    from rsr.store.connect import StateBusy

    caught = types or (FileNotFoundError, ValueError, StateBusy)
    try:
        yield
    except caught as err:
        fail(str(err))


class _LogFile(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        """A full disk cannot take the log either: say nothing here, the one line on the terminal still comes."""


def log_to(folder: Path, configure_prefect: bool = False) -> Path | None:
    """Every log record (Prefect's own logger does not propagate) into one file of this command under `folder`."""
    if "path" in LOG or os.environ.get("RSR_LOG_TO_TERMINAL"):
        return LOG.get("path")
    if configure_prefect:  # Prefect's logging set up first: set up later, it would drop our handler
        from prefect.logging.configuration import ensure_logging_setup

        ensure_logging_setup()

    name = f"rsr-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for where in (folder, Path(tempfile.gettempdir()) / "rsr-logs"):
        try:
            where.mkdir(parents=True, exist_ok=True)
            handler = _LogFile(where / name, encoding="utf-8")
        except OSError:
            continue
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        if not logging.getLogger("prefect").propagate:  # Prefect's records stop at its own logger
            logging.getLogger("prefect").addHandler(handler)
        logging.captureWarnings(True)
        LOG["path"] = where / name
        break
    return LOG.get("path")


def check_writable(root: Path) -> None:
    """A state folder that cannot be written (read-only, not ours, full) says so before anything starts in it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        fail(f"the state folder {root} is not writable ({err.strerror}): use a writable RSR_HOME or --state")
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        fail(f"disk full: {free >> 20} MiB free where the state folder {root} is; free some space or move RSR_HOME")


def _causes(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def one_line(err: BaseException) -> tuple[str, int]:
    """A failure as one line and an exit status: 2 for what the user can fix, 1 for anything else."""
    from rsr.settings import OutsideData
    from rsr.store.connect import DatabaseCorrupt, StateBusy

    for e in _causes(err):  # a full disk first: what fails after it (closing, recording the run) is its echo
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left on device" in str(e):
            return f"disk full: {str(e).strip().splitlines()[0]}", 2
    for e in _causes(err):
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return f"cannot write {e.filename or 'a file'}: {e.strerror} (a read-only or protected folder?)", 2
        if "Read-only file system" in str(e) or "Permission denied" in str(e):
            return f"cannot write: {text}", 2
        if "Could not set lock on file" in str(e) or "Conflicting lock" in str(e):
            return f"the database is locked by another process: {text}", 2
        if isinstance(e, DatabaseCorrupt | StateBusy | OutsideData | FileNotFoundError | ValueError | ConnectionError):
            return text, 2
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}", 1
