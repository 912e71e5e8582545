"""The pipeline config: YAML -> pydantic. Paths are resolved against the config file's folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rsr.curate.decontaminate import DEFAULT_NGRAM
from rsr.curate.dedup import DEFAULT_THRESHOLD
from rsr.curate.verify import DEFAULT_TIMEOUT_S
from rsr.select import Baseline, SelectionPolicy
from rsr.spec import StudentSpec

__all__ = ["PipelineConfig", "RaySpec", "ScoringSpec", "TeacherSpec"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silently ignored setting


class TeacherSpec(_Strict):
    name: str = Field(min_length=1)
    path: str
    format: Literal["messages", "sharegpt", "generations", "zeroeval", "table", "hf"] | None = None
    mapping: dict[str, str] | None = None
    hf_options: dict[str, str] | None = None  # a hub dataset's {config, split, revision}


class ScoringSpec(_Strict):
    shard_size: int = Field(default=64, ge=1)  # trajectories per scoring task: the unit of retry and of loss
    max_tokens: int | None = Field(default=None, ge=8)
    retries: int = Field(default=2, ge=0)
    # Re-score the rows stored before the companion metrics (mean_entropy, top1_share) to fill them in; their RSR,
    # id and key stay as they are. Off by default: a run then scores only what has no score.
    fill_metrics: bool = False


class RaySpec(_Strict):
    """Where the scoring tasks run and what each asks of a node: one GPU and one CPU unless told (the YAML's `ray:`,
    a deployment's `ray` parameter, or the --ray-* flags of every command that takes --ray-address)."""

    address: str | None = None  # ray://host:10001, "auto", or None for a local instance
    num_gpus_per_task: float = Field(default=1, ge=0)  # 0: score on CPUs; 0.5: two tasks share a GPU
    num_cpus_per_task: float = Field(default=1, ge=0)
    wait_for_nodes_s: float = Field(default=0, ge=0)  # an autoscaling cluster: wait for a node that fits; 0: refuse


class BenchmarkSpec(_Strict):
    """A benchmark to decontaminate against (docs/decontamination.md): a preset by name (`aime24`, `math500`, ...),
    or a local file / saved dataset folder / hub dataset id with its problem column."""

    name: str = Field(pattern=r"^[A-Za-z0-9][\w.+-]*$", max_length=100)
    source: str | None = None  # None: the preset called `name`
    problem: str | None = None  # the problem column (a dotted path too); default: problem, question, prompt, ...
    split: str | None = None
    config: str | None = None  # a hub dataset's config (subset)
    revision: str | None = None  # a hub dataset's branch, tag or commit; default: the newest, then pinned
    ngram: int = Field(default=DEFAULT_NGRAM, ge=3, le=64)  # n of the word n-grams


class PipelineConfig(_Strict):
    teachers: list[TeacherSpec] = Field(min_length=1)
    problems: str | None = None
    students: list[StudentSpec] = Field(default_factory=lambda: [StudentSpec()])
    policy: SelectionPolicy = Field(default_factory=lambda: SelectionPolicy(name="per_problem_min_rsr"))
    baseline: Baseline | None = None  # `random` (or {kind: random, seed: N}): for every student without its own
    dedup_threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=1)
    verify_timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    ray: RaySpec | None = None
    output: str = "sft"
    mlflow_uri: str | None = None  # the team's tracking server; default $MLFLOW_TRACKING_URI, then the state's SQLite
    # Benchmarks to decontaminate against: registered before the teachers, then every trajectory is checked.
    benchmarks: list[BenchmarkSpec] = Field(default_factory=list)
    include_contaminated: bool = False  # score and publish trajectories that hold a benchmark problem too

    @field_validator("students", mode="before")
    @classmethod
    def _students_as_refs(cls, value: object) -> object:
        # `students: [smollm2-135m]` is the common case; objects give dtype / template.
        if isinstance(value, list):
            return [{"ref": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("students")
    @classmethod
    def _policies_checked(cls, students: list[StudentSpec]) -> list[StudentSpec]:
        # A student's own policy and baseline are checked here, at load, not when its dataset is published.
        for s in students:
            if s.policy is not None:
                SelectionPolicy.model_validate(s.policy)
            if s.baseline is not None:
                Baseline.model_validate(s.baseline)
        return students

    def policy_of(self, student: StudentSpec) -> SelectionPolicy:
        """The student's own policy, else the config's."""
        return SelectionPolicy.model_validate(student.policy) if student.policy else self.policy

    def baseline_of(self, student: StudentSpec) -> Baseline | None:
        """The student's own baseline, else the config's."""
        return Baseline.model_validate(student.baseline) if student.baseline else self.baseline

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _benchmarks_as_names(cls, value: object) -> object:
        # `benchmarks: [aime24, math500]` names presets; objects give a source and its problem column.
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
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
        students = [s.resolved(base) for s in self.students]  # model folders and template files, from the config
        benchmarks = [  # a source that is a path from the config's folder; else a hub id, as the loader reads it
            b.model_copy(update={"source": str(local(b.source))}) if b.source and local(b.source).exists() else b
            for b in self.benchmarks
        ]
        problems = None if problems is None else str(problems)
        update = {"teachers": teachers, "students": students, "problems": problems, "benchmarks": benchmarks}
        return self.model_copy(update=update)
