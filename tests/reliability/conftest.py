"""Fixtures for the reliability tests: one Prefect server for child processes, a scored demo state to copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ._util import small_demo

TEMPLATE_PROBLEMS = 4  # 4 problems x 3 teachers = 12 trajectories, 1 near duplicate


@pytest.fixture(scope="session")
def prefect_api_url() -> str:
    """The session's temporary Prefect server (the one in-process flows use), shared with child processes.

    Each child would otherwise start its own server (~8 s on a small box); a shared server is also what a real
    deployment has. Children killed mid-flow leave their flow run "Running" there, which nothing here reads."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    return server.api_url


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An initialised MLflow sqlite file: creating its schema takes seconds per state folder, a copy does not."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("rel-mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def fresh_state(root: Path, mlflow_template: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(mlflow_template, root / "mlflow.db")
    return root


@pytest.fixture(scope="session")
def scored_template(tmp_path_factory, mlflow_template) -> tuple[Path, Path]:
    """(state folder, config): the demo pipeline run once, in-process, on 4 problems. Tests copy it."""
    from flows.pipeline import pipeline

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
