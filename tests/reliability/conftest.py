"""Fixtures for the reliability tests: one Prefect server for child processes, a scored demo state to copy."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.child_runs import fresh_state, small_demo
from tests.support.mlflow_store import initialised_mlflow_db

TEMPLATE_PROBLEMS = 4  # 4 problems x 3 teachers = 12 trajectories, 1 near duplicate


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory) -> Iterator[str]:
    """One real Prefect server for the child processes, stopped (its whole process group) when the session ends.

    Each child would otherwise start its own temporary server (~8 s on a small box); a shared server is also what
    a real deployment has. Children killed mid-flow leave their flow run "Running" there, which nothing reads."""
    with servers.prefect_server(tmp_path_factory.mktemp("rel-prefect")) as url:
        yield url


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An initialised MLflow sqlite file: creating its schema takes seconds per state folder, a copy does not."""
    return initialised_mlflow_db(tmp_path_factory.mktemp("rel-mlflow") / "mlflow.db")


@pytest.fixture(scope="session")
def scored_template(tmp_path_factory, mlflow_template) -> tuple[Path, Path]:
    """(state folder, config): the demo pipeline run once, in-process, on 4 problems. Tests copy it."""
    from rsr_flows.pipeline import pipeline

    base = tmp_path_factory.mktemp("rel-template")
    config = small_demo(base / "data", TEMPLATE_PROBLEMS, shard_size=4)
    state = fresh_state(base / "state", mlflow_template)
    pipeline(str(config), state=str(state))
    return state, config


@pytest.fixture
def scored_state(scored_template, mlflow_template, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A private copy of the scored template state (DuckDB, datasets; a fresh MLflow store) and its config."""
    template, config = scored_template
    state = tmp_path / "state"
    shutil.copytree(template, state, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", "writer.lock"))
    shutil.copy(mlflow_template, state / "mlflow.db")
    monkeypatch.setenv("RSR_HOME", str(state))
    return state, config
