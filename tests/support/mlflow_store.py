"""An initialised MLflow sqlite store: creating its schema takes seconds, so tests make one and copy it."""

from __future__ import annotations

from pathlib import Path


def initialised_mlflow_db(db: Path) -> Path:
    """Create MLflow's schema in the sqlite file `db` (its folder must exist) and return `db`."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db
