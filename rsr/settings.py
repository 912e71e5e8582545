"""Settings from the environment (one pydantic-settings class) and the state folder layout (RSR_HOME).
Imports nothing from rsr: every stage may read it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every environment variable the product reads; read afresh by `settings()` so a test or a flag can change one."""

    model_config = SettingsConfigDict(env_prefix="RSR_", extra="ignore")

    home: Path = Path(".rsr")
    models: Path | None = None  # converted students are big and immutable: many state folders may share them
    lock_wait_s: float = Field(default=600.0, ge=0)  # how long a second writer waits for the state folder
    db_wait_s: float = Field(default=60.0, ge=0)  # how long an open waits for another process's DuckDB lock
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")


def settings() -> Settings:
    try:
        return Settings()
    except ValueError as err:  # pydantic's message names the variable and what it expected
        raise ValueError(f"invalid environment setting: {err}") from None


class _Under:
    """A state folder's path: `root / name`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, state: StateDir, owner: type) -> Path:
        return state.root / self.name


@dataclass(frozen=True)
class StateDir:
    """Everything the product writes lives under one folder: DuckDB, MLflow, datasets, Prefect, models."""

    root: Path
    duckdb = _Under("rsr.duckdb")
    mlflow_db = _Under("mlflow.db")
    mlflow_artifacts = _Under("mlartifacts")
    datasets = _Under("datasets")
    prefect_home = _Under("prefect")

    @classmethod
    def from_env(cls, root: str | os.PathLike | None = None) -> StateDir:
        return cls(Path(root or settings().home).expanduser().resolve())

    @property
    def mlflow_uri(self) -> str:
        """The team's tracking server (MLFLOW_TRACKING_URI) if set, else this folder's SQLite store."""
        return settings().mlflow_tracking_uri or f"sqlite:///{self.mlflow_db}"

    @property
    def models(self) -> Path:
        shared = settings().models
        return shared.expanduser().resolve() if shared else self.root / "models"

    def ensure(self) -> StateDir:
        for p in (self.root, self.mlflow_artifacts, self.datasets, self.prefect_home, self.models):
            p.mkdir(parents=True, exist_ok=True)
        return self


def apply_env(state: StateDir) -> StateDir:
    """Point Prefect (its own home, no analytics, quiet logs; set before importing it) and MLflow at the state
    folder. Existing variables win: a deployment may set its own."""
    state.ensure()
    os.environ.setdefault("PREFECT_HOME", str(state.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ["RSR_HOME"] = str(state.root)
    return state
