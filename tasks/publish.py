"""Select and publish: a chat-format SFT dataset with lineage in DuckDB and MLflow."""

from __future__ import annotations

from prefect import task

from rsr.config import StateDir
from rsr.hub import push_to_hub
from rsr.lineage import Tracking
from rsr.publish import Publication, Request, publish_selection, selection_counts, source_files
from rsr.report import current_setting, resolve_student
from rsr.select import SelectionPolicy, candidates, rank_teachers, select
from rsr.store import ScoreKey, Store


@task(name="publish-selection")
def publish(
    state: StateDir,
    run_id: str,
    student: str,
    policy: SelectionPolicy,
    name: str,
    prefect_flow_run_id: str | None = None,
    mlflow_uri: str | None = None,
    key: ScoreKey | None = None,
) -> tuple[Publication, list[tuple[str, float, int]]]:
    """Publish for a registered student (ref or student_id, read from the students table: nothing is loaded).

    ``mlflow_uri``: the --mlflow-uri flag or the config's; None falls back to $MLFLOW_TRACKING_URI, then the
    state folder's store. ``key``: which of the student's scores (dtype, max_tokens, r_max); default: the
    setting it was scored in most recently."""
    with Store.open(state.duckdb) as store:
        student_id, ref, _ = resolve_student(store, student)
        cands = candidates(store, student_id, key or current_setting(store, student_id))
        chosen = select(cands, policy)
        pub = publish_selection(
            store,
            chosen,
            Request(name, student_id, ref, policy, run_id, prefect_flow_run_id),
            out_root=state.datasets,
            tracking=Tracking.resolve(state, mlflow_uri),
            sources=source_files(store, chosen),
            counts=selection_counts(cands, chosen, policy),
        )
        store.set_run_mlflow(run_id, pub.mlflow_run_id)
    return pub, rank_teachers(cands)


@task(name="push-to-hub", retries=2, retry_delay_seconds=30)
def push(state: StateDir, pub: Publication, repo_id: str, mlflow_uri: str | None = None) -> str:
    """Upload a publication to the Hub (datasets' own push; the token from HF_TOKEN or `hf auth login`) and tag
    its MLflow run with the repo. Returns the commit URL."""
    url = push_to_hub(pub.path, repo_id)
    if pub.mlflow_run_id:
        client = Tracking.resolve(state, mlflow_uri).client()
        client.set_tag(pub.mlflow_run_id, "rsr.hub_repo", repo_id)
        client.set_tag(pub.mlflow_run_id, "rsr.hub_commit", url)
    return url
