"""Select, publish, push: a chat-format SFT dataset with lineage in DuckDB and MLflow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefect import task

from rsr.config import StudentSpec
from rsr.publish.files import publish_selection, source_files
from rsr.publish.hub import push_to_hub
from rsr.publish.lineage import Tracking
from rsr.publish.manifest import Publication, Request
from rsr.select import SelectionPolicy, rank_teachers, select, selection_counts
from rsr.settings import StateDir
from rsr.store.queries import Candidate, Reader, StudentRow
from rsr.store.writer import Store
from rsr_tasks.score import FoundStudent, load_student

if TYPE_CHECKING:  # a type only: torch (~235 MB) loads with the student, not with the CPU stages
    from rsr.score.student import Student


@dataclass(frozen=True)
class Selection:
    """What a policy chose among a student's scored trajectories, and the numbers the card and MLflow show."""

    student: StudentRow
    policy: SelectionPolicy
    chosen: list[Candidate]
    counts: dict[str, int]  # rsr.select.selection_counts
    ranking: list[tuple[str, float, int]]  # (teacher, dataset RSR, n) best first, over all candidates


@task(name="select")
def select_trajectories(state: StateDir, found: FoundStudent, policy: SelectionPolicy) -> Selection:
    """Apply the policy to the student's current scores made as ``found.key`` says (dtype, max_tokens, r_max)."""
    with Reader.open(state.duckdb) as reader:
        cands = reader.candidates(found.student.student_id, found.key)
    chosen = select(cands, policy)
    return Selection(found.student, policy, chosen, selection_counts(cands, chosen, policy), rank_teachers(cands))


def training_split(info: dict) -> Callable[[list[dict], list[dict] | None], dict[str, str]]:
    """For a student whose template rewrites assistant text: the prompt/completion split its scores were made on.
    Rendering needs the student's tokenizer and template, so the student is loaded (once per process, shared with
    scoring); it must be the registered one."""
    return _registered(info).training_example


def _registered(info: dict) -> Student:
    spec = StudentSpec(
        ref=info["ref"],
        dtype=info["dtype"],
        chat_template=info.get("chat_template"),
        chat_template_kwargs=info.get("chat_template_kwargs"),
    )
    student = load_student(spec)
    if student.student_id != info["student_id"]:
        raise ValueError(f"student {info['ref']!r} is now {student.student_id}, scored as {info['student_id']}")
    return student


def native_split(info: dict) -> Callable[[list[dict], list[dict] | None], dict] | None:
    """For a student whose template reads reasoning in its own field or tags (or tool arguments as mappings): each
    row's `messages` in that form, as they were scored, so a trainer feeds its template what it reads. None when
    the records' form is the student's own (nothing is loaded then)."""
    if not info.get("native_form"):
        return None
    student = _registered(info)  # loaded once per process, shared with scoring
    return lambda messages, tools: {"messages": student.renderer.native(messages)}


@task(name="publish")
def publish(
    state: StateDir,
    run_id: str,
    selection: Selection,
    name: str,
    prefect_flow_run_id: str | None = None,
    mlflow_uri: str | None = None,
) -> Publication:
    """Write the selection as a dataset, log it to MLflow and register it in DuckDB.

    ``mlflow_uri``: the --mlflow-uri flag or the config's; None falls back to $MLFLOW_TRACKING_URI, then the
    state folder's store."""
    info, row = selection.student.info, selection.student
    request = Request(
        name,
        row.student_id,
        row.ref,
        selection.policy,
        run_id,
        prefect_flow_run_id,
        render_mode=info.get("render_mode", "template"),
        render_note=info.get("render_note"),
        chat_template=info.get("chat_template"),
        end_of_turn=info.get("end_of_turn"),  # registrations before issue 31 lack it: the card says it in words
        split=training_split(info) if info.get("render_mode") == "generation" else native_split(info),
    )
    with Store.open(state.duckdb) as store:
        pub = publish_selection(
            store,
            selection.chosen,
            request,
            out_root=state.datasets,
            tracking=Tracking.resolve(state, mlflow_uri),
            sources=source_files(store, selection.chosen),
            counts=selection.counts,
        )
        store.set_run_mlflow(run_id, pub.mlflow_run_id)
    return pub


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
