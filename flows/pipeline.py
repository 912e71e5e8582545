"""pipeline: the whole DAG from a YAML config. Teachers -> (ingest, dedup, verify) -> score per student ->
select -> publish, each stage re-runnable alone and a no-op when its inputs are unchanged."""

from __future__ import annotations

from prefect import flow

from flows._run import recorded_run, state_dir
from flows.curate import curate_teacher
from flows.publish import publish_dataset
from flows.score import run_score_student
from rsr.config import PipelineConfig


@flow(name="pipeline")
def pipeline(config_path: str, state: str | None = None) -> dict:
    config = PipelineConfig.load(config_path)
    st = state_dir(state)
    with recorded_run(st, "pipeline", {"config": config_path}) as run_id:
        teachers = [
            curate_teacher(
                t.name,
                t.path,
                format=t.format,
                mapping=t.mapping,
                problems=config.problems,
                score=False,
                dedup_threshold=config.dedup_threshold,
                verify_timeout_s=config.verify_timeout_s,
                state=str(st.root),
            )
            for t in config.teachers
        ]
        scores = [run_score_student(st, run_id, s, config.scoring, config.ray) for s in config.students]
        published = []
        for i, spec in enumerate(config.students):
            name = config.output if len(config.students) == 1 else f"{config.output}-{i}"
            published.append(publish_dataset(spec, config.policy, name, state=str(st.root)))
        return {"teachers": teachers, "scores": scores, "published": published}
