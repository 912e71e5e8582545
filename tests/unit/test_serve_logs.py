"""`rsr serve`'s terminal shows one line per log record, never a traceback, and leaves a run's own error records to
the one line `rsr serve` says about the run; its log file keeps everything (deployments/logs.py, logging.yml)."""

from __future__ import annotations

import io
import logging

import yaml


def _logger(name: str, *handlers: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = list(handlers)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_the_terminal_gets_one_line_and_the_file_the_traceback(tmp_path, monkeypatch):
    from rsr_deployments import SERVE_LOG
    from rsr_deployments.logs import OneLineConsole, serve_log_file

    log = tmp_path / "serve.log"
    monkeypatch.setenv(SERVE_LOG, str(log))
    terminal = io.StringIO()
    console, file = OneLineConsole(stream=terminal), serve_log_file()
    try:
        runner = _logger("rsr-test.runner", console, file)
        try:
            raise ValueError("teacher input 'x.jsonl' is outside the data roots\nsecond line")
        except ValueError:
            runner.exception("could not submit a run")
        runner.warning("/x/score.py:30: UserWarning: a note\n  return Student.load(...)")
        _logger("prefect.flow_runs.test", console, file).error("Encountered exception", exc_info=ValueError("boom"))
    finally:
        file.close()
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 2, lines  # the run's own error is left to `rsr serve`'s line about the run
    assert lines[0].endswith(f"could not submit a run (traceback: {log})")
    assert lines[1].endswith("UserWarning: a note")
    written = log.read_text()
    assert "Traceback (most recent call last)" in written and "second line" in written
    assert "Encountered exception" in written and "return Student.load" in written


def test_logging_yml_is_prefects_with_our_console_and_file():
    """The rest of Prefect's logging (levels, the API handler that sends run logs to the UI) is unchanged."""
    from pathlib import Path

    import prefect.logging

    from rsr_deployments.serve import LOGGING_YML

    ours = yaml.safe_load(LOGGING_YML.read_text())
    theirs = yaml.safe_load((Path(prefect.logging.__file__).parent / "logging.yml").read_text())
    assert ours["handlers"]["console"]["class"] == "rsr_deployments.logs.OneLineConsole"
    assert ours["handlers"]["file"]["()"] == "rsr_deployments.logs.serve_log_file"
    assert ours["root"]["handlers"] == ["console", "file"]
    assert ours["loggers"]["prefect._internal"]["handlers"] == ["console", "file"]
    for name, logger in theirs["loggers"].items():
        if name != "prefect._internal":
            assert ours["loggers"][name] == logger, name
    assert {k: v for k, v in ours["handlers"].items() if k not in ("console", "file")} == {
        k: v for k, v in theirs["handlers"].items() if k != "console"
    }
