"""publish_dataset: select a student's trajectories by policy and publish them with lineage."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows._run import recorded_run, state_dir
from rsr.config import StudentSpec
from rsr.select import SelectionPolicy
from tasks.publish import publish
from tasks.score import register_student


@flow(name="publish-dataset")
def publish_dataset(
    student: StudentSpec | None = None,
    policy: SelectionPolicy | None = None,
    name: str = "sft",
    state: str | None = None,
) -> dict:
    st = state_dir(state)
    student = student or StudentSpec()
    policy = policy or SelectionPolicy(name="per_problem_min_rsr")
    params = {"student": student.ref, "policy": policy.model_dump(), "name": name}
    with recorded_run(st, "publish-dataset", params) as run_id:
        info = register_student(st.duckdb, student)
        pub, ranking = publish(st, run_id, info["student_id"], student.ref, policy, name, flow_run.get_id())
        return {
            "dataset_id": pub.dataset_id,
            "path": str(pub.path),
            "n_rows": pub.n_rows,
            "mlflow_run_id": pub.mlflow_run_id,
            "student_id": info["student_id"],
            "teacher_ranking": ranking,
        }
