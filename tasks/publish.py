"""Select and publish: a chat-format SFT dataset with lineage in DuckDB and MLflow."""

from __future__ import annotations

from collections.abc import Callable

from prefect import task

from rsr.config import StateDir, StudentSpec
from rsr.hub import push_to_hub
from rsr.lineage import Tracking
from rsr.publish import Publication, Request, publish_selection, selection_counts, source_files
from rsr.report import current_setting, resolve_student
from rsr.select import SelectionPolicy, candidates, rank_teachers, select
from rsr.store import ScoreKey, Store
from tasks.score import load_student


def training_split(info: dict) -> Callable[[list[dict]], dict[str, str]]:
    """For a student whose template rewrites assistant text: the prompt/completion split its scores were made on.
    Rendering needs the student's tokenizer and template, so the student is loaded (once per process, shared with
    scoring); it must be the registered one."""
    spec = StudentSpec(ref=info["ref"], dtype=info["dtype"], chat_template=info.get("chat_template"))
    student = load_student(spec)
    if student.student_id != info["student_id"]:
        raise ValueError(f"student {info['ref']!r} is now {student.student_id}, scored as {info['student_id']}")
    return student.training_example


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
        info = next(r.info for r in store.students() if r.student_id == student_id)
        cands = candidates(store, student_id, key or current_setting(store, student_id))
        chosen = select(cands, policy)
        pub = publish_selection(
            store,
            chosen,
            Request(
                name,
                student_id,
                ref,
                policy,
                run_id,
                prefect_flow_run_id,
                render_mode=info.get("render_mode", "template"),
                render_note=info.get("render_note"),
                chat_template=info.get("chat_template"),
                split=training_split(info) if info.get("render_mode") == "generation" else None,
            ),
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
