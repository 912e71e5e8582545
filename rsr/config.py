"""The state folder layout (one env var, RSR_HOME) and the pipeline config (YAML -> pydantic)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateDir:
    """Everything the product writes lives under one folder: DuckDB, MLflow, datasets, Prefect, models."""

    root: Path

    @classmethod
    def from_env(cls, root: str | os.PathLike | None = None) -> StateDir:
        return cls(Path(root or os.environ.get("RSR_HOME", ".rsr")).expanduser().resolve())

    @property
    def duckdb(self) -> Path:
        return self.root / "rsr.duckdb"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def models(self) -> Path:
        # Converted students are big and immutable: RSR_MODELS lets many state folders (tests) share them.
        shared = os.environ.get("RSR_MODELS")
        return Path(shared).expanduser().resolve() if shared else self.root / "models"

    def ensure(self) -> StateDir:
        for p in (self.root, self.mlflow_artifacts, self.datasets, self.prefect_home, self.models):
            p.mkdir(parents=True, exist_ok=True)
        return self
