"""The `rsr` command: one module per command group, the options and errors they share once (options.py,
errors.py). The one package in rsr/ that reaches up to flows/ and deployments/, lazily inside commands.

score.py    score, explain            (a student and a file, no store needed)
curate.py   run, demo, add-teacher, add-student
benchmarks.py  add-benchmark
publish.py  publish
serve.py    serve
status.py   status
read.py     sql, report
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

# isort: off
from rsr.cli import curate, benchmarks, score, publish, status, read, serve  # noqa: F401 (each registers its commands, in this order)

# isort: on
from rsr.cli.app import app
from rsr.cli.errors import LOG, log_to, one_line

__all__ = ["app", "main"]


def main() -> None:
    """`rsr`: no library's traceback in front of an error: one line, the traceback in the log file it names."""
    if sys.argv[1:2] != ["serve"]:  # `rsr serve` and its runs' subprocesses: one line a record (its logging.yml)
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL", "CRITICAL")
    LOG["main"] = Path()
    try:
        app()
    except Exception as err:  # SystemExit (typer.Exit, click's usage errors) passes through untouched
        line, code = one_line(err)
        log = log_to(Path(os.environ.get("RSR_HOME") or ".rsr") / "logs")
        logging.getLogger("rsr").error("rsr failed: %s", line, exc_info=err)
        typer.secho(f"error: {line}" + (f" (log: {log})" if log else ""), fg=typer.colors.RED, err=True)
        raise SystemExit(code) from None
