"""Shared fixtures: the real reference data beside the repo, and a private state folder per test."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.shared_data import REPO, SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect reads its home when first imported: one temporary server database for the whole session.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="rsr-test-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# In-process flows start Prefect's temporary server; on a busy box it needs more than Prefect's default 20 s.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "240")

# One torch thread per test process. The suite runs on 2 cores while another process keeps one of them busy (CI,
# test-under-load): two threads then wait on each other at every op (measured on this project's 2-core box with
# one core loaded: tests/integration/test_prompt_reuse.py took 743 s with 2 threads, 130 s with 1). Set before
# torch is imported; child processes (rsr in a subprocess, servers, Ray workers) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Converted students are shared by all tests (and kept between local runs); each test still gets its own RSR_HOME.
os.environ.setdefault("RSR_MODELS", str(REPO / ".rsr-cache" / "models"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (8 real teachers on 721 MATH problems); tests that need it skip where it is absent."""
    if not (SHARED_DATA / "zeroeval-math-l5").is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set RSR_SHARED_DATA or lay out ../shared/data)")
    return SHARED_DATA


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    """A fresh RSR_HOME for one test."""
    home = tmp_path / "rsr-home"
    monkeypatch.setenv("RSR_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def smollm():
    """The embedded default student, float32 (exact comparisons)."""
    from rsr.score.student import Student

    return Student.load("smollm2-135m", dtype="float32")


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory) -> Path:
    """An initialised MLflow sqlite DB, copied per test: creating its schema takes seconds, a copy does not."""
    from tests.support.mlflow_store import initialised_mlflow_db  # here: only publishing tests pay for MLflow

    return initialised_mlflow_db(tmp_path_factory.mktemp("mlflow-template") / "mlflow.db")


@pytest.fixture
def env(state_dir: Path, mlflow_template: Path, tmp_path: Path) -> Iterator[dict]:
    """The hand-made publishable state (tests/support/publish_case.py)."""
    from tests.support.publish_case import publish_case

    with publish_case(state_dir, mlflow_template, tmp_path) as case:
        yield case


def pytest_sessionfinish(session, exitstatus) -> None:
    """Stop the temporary Prefect server that in-process flows started (atexit alone misses a pytest that is
    interrupted); servers started by fixtures stop themselves (tests/support/servers.py)."""
    import sys

    if "prefect.server.api.server" in sys.modules:
        from prefect.server.api.server import SubprocessASGIServer

        SubprocessASGIServer().stop()
