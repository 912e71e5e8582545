"""Settings from the environment (one pydantic-settings class) and the state folder layout (RSR_HOME).
Imports nothing from rsr: every stage may read it."""

from __future__ import annotations

import os
import re
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
    # What a deployment run (event, schedule, API) may read: folders (os.pathsep-separated) and hub ids or
    # organisations (comma-separated, `org` or `org/name`). Set, RSR_DATA_ROOTS confines the CLI too.
    data_roots: str | None = None
    hub_allow: str | None = None


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


class OutsideData(PermissionError):
    """A path outside RSR_DATA_ROOTS or a hub id not in RSR_HUB_ALLOW: refused before anything is read."""


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


@dataclass(frozen=True)
class DataScope:
    """Where inputs may come from. `roots` None: anywhere (a person's own shell); else only under those folders
    (resolved, symlinks followed) and only the hub ids `hub_allow` names."""

    roots: tuple[Path, ...] | None
    hub_allow: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, deployed: bool) -> DataScope:
        """A deployment run is always confined (no RSR_DATA_ROOTS: it reads nothing); the CLI only when it is set."""
        env = settings()
        roots = tuple(Path(r).expanduser().resolve() for r in (env.data_roots or "").split(os.pathsep) if r.strip())
        allow = tuple(a.strip().strip("/") for a in (env.hub_allow or "").split(",") if a.strip())
        return cls(roots if (roots or deployed) else None, allow)

    def path(self, value: str | os.PathLike, what: str = "input") -> Path:
        """`value` if it lies under a root once resolved (every symlink followed), else OutsideData."""
        if self.roots is None:
            return Path(value)
        real = Path(value).expanduser().resolve()
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            where = os.pathsep.join(map(str, self.roots)) or "(RSR_DATA_ROOTS is not set: nothing may be read)"
            raise OutsideData(f"{what} {str(value)!r} is outside the data roots {where}: refused, nothing read")
        return real  # what was checked is what gets read, not a name a symlink could re-point

    def hub_id(self, value: str, what: str = "hub dataset") -> str:
        """`value` if it is a hub id that RSR_HUB_ALLOW names (exactly, or by its organisation)."""
        if self.roots is None:
            return value
        org = value.split("/")[0]
        if not HUB_ID.fullmatch(value) or ".." in value or not (value in self.hub_allow or org in self.hub_allow):
            allowed = ", ".join(self.hub_allow) or "(RSR_HUB_ALLOW is not set: none)"
            raise OutsideData(f"{what} {value!r} is not in the allowed hub ids {allowed}: refused, nothing read")
        return value

    def source(self, value: str, hub: bool, what: str = "input") -> str:
        """A file or folder, or (`hub`: what a reader would take for a hub id) a hub id."""
        if self.roots is None:
            return value  # as named: a person's own shell reads what they name
        return self.hub_id(value, what) if hub else str(self.path(value, what))
