"""Select and publish: a chat-format SFT dataset with lineage in DuckDB and MLflow."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from rsr.config import StateDir
from rsr.publish import Publication, publish_dataset
from rsr.select import SelectionPolicy, candidates, rank_teachers, select
from rsr.store import Store


@task(name="publish-dataset")
def publish(
    state: StateDir,
    run_id: str,
    student_id: str,
    student_ref: str,
    policy: SelectionPolicy,
    name: str,
    prefect_flow_run_id: str | None = None,
) -> tuple[Publication, list[tuple[str, float, int]]]:
    with Store.open(state.duckdb) as store:
        cands = candidates(store, student_id)
        chosen = select(cands, policy)
        _, rows = store.query(
            "SELECT DISTINCT source_file FROM trajectories WHERE list_contains(?, trajectory_id) ORDER BY 1",
            [[c.trajectory_id for c in chosen]],
        )
        sources = [Path(r[0]) for r in rows if Path(r[0]).is_file()]
        pub = publish_dataset(
            store,
            chosen,
            out_root=state.datasets,
            name=name,
            student_id=student_id,
            student_ref=student_ref,
            policy=policy,
            source_files=sources,
            run_id=run_id,
            prefect_flow_run_id=prefect_flow_run_id,
            mlflow_uri=state.mlflow_uri,
            mlflow_artifacts=state.mlflow_artifacts,
        )
        store.set_run_mlflow(run_id, pub.mlflow_run_id)
    return pub, rank_teachers(cands)
