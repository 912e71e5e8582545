"""publish_dataset: select a student's trajectories by policy and publish them with lineage."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow
from prefect.runtime import flow_run

from flows._run import recorded_run, state_dir
from rsr.config import StudentSpec
from rsr.select import SelectionPolicy
from tasks.publish import publish, push
from tasks.score import find_student

DEFAULT_POLICY = SelectionPolicy(name="per_problem_min_rsr")


@flow(name="publish-dataset")
def publish_dataset(
    student: StudentSpec | None = None,
    policy: SelectionPolicy | None = None,
    name: str | None = None,
    mlflow_uri: str | None = None,
    push_to_hub: str | None = None,
    state: str | None = None,
) -> dict:
    """`name` defaults to the student's configured output (sft-<model name>); `policy` to the student's own;
    `mlflow_uri` to $MLFLOW_TRACKING_URI, then the state folder's MLflow store; `push_to_hub`: also upload the
    dataset to this Hugging Face dataset repo."""
    home = state_dir(state)
    student = student or StudentSpec()
    policy = policy or student.policy or DEFAULT_POLICY
    name = name or student.dataset_name()
    params = {"student": student.ref, "policy": policy.model_dump(), "name": name}
    with recorded_run(home, params) as run_id:
        found = find_student(home.duckdb, student)  # the students table knows its id: no model is loaded
        pub, ranking = publish(
            home, run_id, found["student_id"], policy, name, flow_run.get_id(), mlflow_uri, found["key"]
        )
        hub = push(home, pub, push_to_hub, mlflow_uri) if push_to_hub else None
        result = asdict(pub) | {"path": str(pub.path), "hub_commit_url": hub, "student_id": found["student_id"]}
        return result | {"teacher_ranking": ranking}
