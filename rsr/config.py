"""Settings from the environment (one pydantic-settings class), the state folder layout (RSR_HOME) and the
pipeline config (YAML -> pydantic)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rsr.select import SelectionPolicy


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


# ---------------------------------------------------------------------------------------------------------------
# The pipeline config: YAML -> pydantic. Paths are resolved against the config file's folder.
# ---------------------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silently ignored setting


class TeacherSpec(_Strict):
    name: str = Field(min_length=1)
    path: str
    format: Literal["messages", "sharegpt", "generations", "zeroeval", "table", "hf"] | None = None
    mapping: dict[str, str] | None = None
    hf_options: dict[str, str] | None = None  # a hub dataset's {config, split, revision}


class StudentSpec(_Strict):
    ref: str = "smollm2-135m"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    device: str = "auto"
    chat_template: str | None = None
    policy: SelectionPolicy | None = None  # how this student's dataset is selected after a (re-)score
    output: str | None = None  # its dataset's name; default: sft-<model name>

    def dataset_name(self, base: str = "sft") -> str:
        """Outputs are named by student, so several students' datasets are told apart at a glance."""
        if self.output:
            return self.output
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self.ref.rstrip("/")).name).strip("-.") or "student"
        template = Path(self.chat_template).stem if self.chat_template else None
        return f"{base}-{name}" + (f"-{template}" if template else "")


class ScoringSpec(_Strict):
    shard_size: int = Field(default=64, ge=1)  # trajectories per scoring task: the unit of retry and of loss
    max_tokens: int | None = Field(default=None, ge=8)
    retries: int = Field(default=2, ge=0)


class RaySpec(_Strict):
    address: str | None = None  # ray://host:10001, "auto", or None for a local instance
    num_gpus_per_task: float = Field(default=0, ge=0)
    num_cpus_per_task: float = Field(default=1, ge=0)


class PipelineConfig(_Strict):
    teachers: list[TeacherSpec] = Field(min_length=1)
    problems: str | None = None
    students: list[StudentSpec] = Field(default_factory=lambda: [StudentSpec()])
    policy: SelectionPolicy = Field(default_factory=lambda: SelectionPolicy(name="per_problem_min_rsr"))
    dedup_threshold: float = Field(default=0.9, gt=0, le=1)
    verify_timeout_s: float = Field(default=5.0, gt=0)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    ray: RaySpec | None = None
    output: str = "sft"
    mlflow_uri: str | None = None  # the team's tracking server; default $MLFLOW_TRACKING_URI, then the state's SQLite

    @field_validator("students", mode="before")
    @classmethod
    def _students_as_refs(cls, value: object) -> object:
        # `students: [smollm2-135m]` is the common case; objects give dtype / template.
        if isinstance(value, list):
            return [{"ref": v} if isinstance(v, str) else v for v in value]
        return value

    @classmethod
    def load(cls, path: str | os.PathLike) -> PipelineConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: config file not found") from None
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: the config must be a YAML mapping")
        return cls.model_validate(raw).with_inputs_from(path)

    def with_inputs_from(self, config_path: Path) -> PipelineConfig:
        """Relative paths are taken from the config's folder, so a config works from any working directory; a missing
        input fails before any work, with an error naming the config and the teacher, not deep inside a flow."""
        base = config_path.parent
        where = f"relative paths are taken from the config's folder {base.resolve()}"

        def local(p: str) -> Path:
            q = Path(p).expanduser()
            return q if q.is_absolute() else (base / q).resolve()

        teachers = []
        for t in self.teachers:
            if t.format == "hf" and not Path(t.path).is_absolute() and not (base / t.path).exists():
                teachers.append(t)  # not a local folder: a hub dataset id
                continue
            if not (path := local(t.path)).exists():
                raise FileNotFoundError(f"{config_path}: teacher {t.name!r}: input {path} does not exist ({where})")
            teachers.append(t.model_copy(update={"path": str(path)}))
        problems = None if self.problems is None else local(self.problems)
        if problems is not None and not problems.is_file():
            raise FileNotFoundError(f"{config_path}: problems file {problems} does not exist ({where})")
        return self.model_copy(update={"teachers": teachers, "problems": None if problems is None else str(problems)})
