"""pipeline: the whole DAG from a YAML config. Benchmarks registered -> teachers (ingest, dedup, verify,
decontaminate) -> score per student -> select -> publish, each stage re-runnable alone and a no-op when its inputs
are unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow

from rsr.config import PipelineConfig, RaySpec
from rsr_flows._artifacts import show_run
from rsr_flows._run import recorded_run, state_dir
from rsr_flows.benchmark import BenchmarkChecked, add_benchmark
from rsr_flows.curate import Curated, curate_teacher
from rsr_flows.publish import Published, publish_dataset
from rsr_flows.score import Scored, run_score_student


@dataclass(frozen=True)
class PipelineResult:
    teachers: list[Curated]
    scores: list[Scored]
    published: list[Published]
    benchmarks: list[BenchmarkChecked] = field(default_factory=list)


@flow(name="pipeline")
def pipeline(
    config_path: str, state: str | None = None, ray: RaySpec | None = None, mlflow_uri: str | None = None
) -> PipelineResult:
    """`ray` (from `--ray-address`) overrides the config's Ray address, `mlflow_uri` its MLflow server."""
    config = PipelineConfig.load(config_path)
    home = state_dir(state)
    ray = ray_for(config, ray)
    with recorded_run(home, {"config": config_path}) as run_id:
        # Registered first: each teacher's decontaminate stage then checks its trajectories against all of them.
        benchmarks = [add_benchmark(b, state=str(home.root)) for b in config.benchmarks]
        flagged = config.include_contaminated
        teachers = [
            curate_teacher(
                t.name,
                t.path,
                **t.model_dump(include={"format", "mapping", "hf_options"}),
                problems=config.problems,
                score=False,
                dedup_threshold=config.dedup_threshold,
                verify_timeout_s=config.verify_timeout_s,
                state=str(home.root),
                include_contaminated=flagged,
            )
            for t in config.teachers
        ]
        scores = [run_score_student(home, run_id, s, config.scoring, ray, flagged) for s in config.students]
        published = []
        uri = mlflow_uri or config.mlflow_uri
        for spec, scored in zip(config.students, scores, strict=True):
            # One student: the config's output name (unless it names its own); several: each named by its student.
            name = spec.dataset_name(config.output) if len(config.students) > 1 else spec.output or config.output
            policy, baseline = config.policy_of(spec), config.baseline_of(spec)
            registered = spec.model_copy(update={"ref": scored.student_id})  # the one just scored, by its id
            published.append(
                publish_dataset(
                    registered,
                    policy,
                    name,
                    mlflow_uri=uri,
                    state=str(home.root),
                    include_contaminated=flagged,
                    baseline=baseline,
                )  # fmt: skip
            )
        show_run(home, [s.student_id for s in scores], [p.publication for p in published], uri)
        return PipelineResult(teachers, scores, published, benchmarks)


def ray_for(config: PipelineConfig, given: RaySpec | None) -> RaySpec | None:
    """The config's `ray:` with what the command line gave laid over it (only the flags given: --ray-address alone
    keeps the config's shares)."""
    if given is None:
        return config.ray
    if config.ray is None and "address" not in given.model_fields_set:
        raise ValueError("--ray-gpus-per-task/--ray-cpus-per-task: the config has no `ray:`; give --ray-address too")
    return config.ray.model_copy(update=given.model_dump(include=given.model_fields_set)) if config.ray else given
