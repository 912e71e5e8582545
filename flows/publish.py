"""publish_dataset: find the student, select its trajectories by policy, publish them with lineage (and push)."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow
from prefect.runtime import flow_run

from rsr.publish.manifest import Publication
from rsr.select import Baseline, SelectionPolicy
from rsr.spec import StudentSpec
from rsr.store.writer import Store
from rsr_flows._artifacts import show_run
from rsr_flows._entry import data_scope, student_input
from rsr_flows._run import recorded_run, state_dir
from rsr_tasks.publish import publish, push, random_baseline, select_trajectories
from rsr_tasks.score import find_student

DEFAULT_POLICY = SelectionPolicy(name="per_problem_min_rsr")


@dataclass(frozen=True)
class Published:
    publication: Publication
    student_id: str
    teacher_ranking: list[tuple[str, float, int]]  # (teacher, dataset RSR, n) best first
    hub_commit_url: str | None = None


@flow(name="publish-dataset")
def publish_dataset(
    student: StudentSpec | None = None,
    policy: SelectionPolicy | None = None,
    name: str | None = None,
    mlflow_uri: str | None = None,
    push_to_hub: str | None = None,
    state: str | None = None,
    include_contaminated: bool = False,
    baseline: Baseline | None = None,
) -> Published:
    """`student`: a spec naming a registered student (rsr.spec: its id, or its ref and what tells it apart);
    `name` defaults to the student's configured output (sft-<model name>); `policy` to the student's own;
    `mlflow_uri` to $MLFLOW_TRACKING_URI, then the state folder's MLflow store; `push_to_hub`: also upload the
    dataset to this Hugging Face dataset repo; `include_contaminated`: let in (scored) trajectories that hold a
    benchmark problem (left out by default); `baseline` (default: the student's own): also publish
    `<name>-random`, a seeded random pick with the selection's response tokens (the publication's `baseline`)."""
    student = student_input(data_scope(), student or StudentSpec())
    home = state_dir(state)
    params = {"student": student.ref} | ({"include_contaminated": True} if include_contaminated else {})
    with recorded_run(home, params) as run_id:
        found = find_student(home.duckdb, student)
        registered = found.student.spec()
        policy = policy or _policy(student.policy or registered.policy)
        name = name or student.output or registered.dataset_name()
        baseline = baseline or _baseline(student.baseline or registered.baseline)
        chosen = {"student_id": found.student.student_id, "policy": policy.model_dump(), "name": name}
        chosen |= {"baseline": baseline.model_dump()} if baseline else {}
        with Store.open(home.duckdb) as store:
            store.merge_run_params(run_id, chosen)
        selection = select_trajectories(home, found, policy, include_contaminated)  # each result the next's argument
        random = random_baseline(selection, baseline) if baseline else None
        pub = publish(home, run_id, selection, name, flow_run.get_id(), mlflow_uri, random)
        hub = push(home, pub, push_to_hub, mlflow_uri) if push_to_hub else None
        published = Published(pub, found.student.student_id, selection.ranking, hub)
        show_run(home, [published.student_id], [pub], mlflow_uri)  # run alone (a deployment, `rsr publish`)
        return published


def _policy(configured: dict | None) -> SelectionPolicy:
    return SelectionPolicy.model_validate(configured) if configured else DEFAULT_POLICY


def _baseline(configured: dict | None) -> Baseline | None:
    return Baseline.model_validate(configured) if configured else None
