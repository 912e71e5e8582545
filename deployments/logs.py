"""`rsr serve`'s logging (deployments/logging.yml, Prefect's own file with two handlers changed), in the serve process
and in every flow-run process it starts: the terminal gets one line per record and never a traceback; the log file
(RSR_SERVE_LOG, set by `rsr serve`) gets everything, tracebacks included. A run's own error records stay off the
terminal: `rsr serve` says once, in one line, how each run ended (rsr_deployments.runs)."""

from __future__ import annotations

import copy
import logging
import os

from prefect.logging.handlers import PrefectConsoleHandler

from rsr_deployments import SERVE_LOG

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class OneLineConsole(PrefectConsoleHandler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR and (record.name.startswith(RUN_LOGGERS) or record.name == "rsr"):
            return  # a run's failure, or the command's: each is said once, in one line, by `rsr serve` itself
        traceback = record.exc_info or record.exc_text or record.stack_info
        if traceback or "\n" in record.getMessage():  # a warning's message ends with its source line, for one
            record = copy.copy(record)  # the file handler still gets the original, traceback and all
            where = os.environ.get(SERVE_LOG) if traceback else None
            record.msg = one_line(record.getMessage()) + (f" (traceback: {where})" if where else "")
            record.args, record.exc_info, record.exc_text, record.stack_info = (), None, None, None
        super().emit(record)


def serve_log_file() -> logging.Handler:
    """The file `rsr serve` named for this session (appended to by each of its processes), else nowhere. Python's
    warnings become log records too (one line on the terminal, not the warning and its source line)."""
    logging.captureWarnings(True)
    path = os.environ.get(SERVE_LOG)
    if not path:
        return logging.NullHandler()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    return handler


def one_line(text: str | None) -> str:
    """A message's first non-empty line, without Prefect's preamble to a run's exception."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0].removeprefix("Flow run encountered an exception: ") if lines else "(no message)"
