"""What a run shows in the Prefect UI, beside its logs (the run's Artifacts tab, and the Artifacts page by key): each
scored student's teacher board as a table, and for each dataset it published, its path and its MLflow run. Made by
the run a deployment, a schedule or a command started, not by the subflows under it, from what the run stored."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext

from rsr.publish.lineage import Tracking
from rsr.publish.manifest import Publication
from rsr.report.page import teacher_board
from rsr.settings import StateDir
from rsr.store.queries import Reader

BOARD = {  # teacher_board's column -> the table's
    "rank": "rank",
    "teacher": "teacher",
    "n_scored": "scored",
    "n_trajectories": "trajectories",
    "all_accuracy": "accuracy",
    "dataset_rsr": "dataset RSR",
    "ci_low": "95% low",
    "ci_high": "95% high",
    "selected": "selected",
}


def show_run(
    home: StateDir, student_ids: Sequence[str], published: Sequence[Publication] = (), mlflow_uri: str | None = None
) -> None:
    """The artifacts of this run, if it is the outermost one (`mlflow_uri`: the one its publishing was given). A
    failure here never fails the run: it is logged."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.parent_task_run_id is not None:
        return  # a subflow: the run above it shows what it did
    try:
        for student_id in dict.fromkeys(student_ids):
            board_artifact(home, student_id)
        for pub in published:
            dataset_artifacts(home, pub, mlflow_uri)
    except Exception as err:  # the UI's extras: the run's work is done and stored whatever happens here
        get_run_logger().warning("this run's Prefect artifacts could not be made: %s", err)


def board_artifact(home: StateDir, student_id: str) -> None:
    with Reader.open(home.duckdb) as reader:
        board = teacher_board(reader, student_id)
    rows = [{name: _plain(r[col]) for col, name in BOARD.items()} for r in board.to_dict("records")]
    create_table_artifact(
        table=rows,
        key=f"teacher-board-{_key(student_id)}",
        description=f"Teachers for student `{student_id}`, lowest dataset RSR first (`rsr status`, docs/sql.md)",
    )


def dataset_artifacts(home: StateDir, p: Publication, mlflow_uri: str | None = None) -> None:
    create_markdown_artifact(
        key=f"dataset-{_key(p.path.parent.name)}",
        markdown=f"**{p.n_rows} rows** in `{p.path}` (dataset {p.dataset_id})\n\n"
        f"```python\nfrom datasets import load_from_disk\nds = load_from_disk({str(p.path)!r})\n```",
        description=f"The dataset {p.path.parent.name}, version {p.dataset_id}",
    )
    if not p.mlflow_run_id:
        return
    tracking = Tracking.resolve(home, mlflow_uri)  # where publishing logged it: the flag, MLFLOW_TRACKING_URI, local
    uri, key, text = tracking.uri, f"mlflow-{_key(p.path.parent.name)}", f"MLflow run {p.mlflow_run_id}"
    if uri.startswith(("http://", "https://")):
        experiment = tracking.client().get_run(p.mlflow_run_id).info.experiment_id
        link = f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{p.mlflow_run_id}"
        create_link_artifact(link=link, link_text=text, key=key, description="Its lineage in MLflow")
    else:  # a local store has no web page until someone serves it
        create_markdown_artifact(
            key=key, markdown=f"{text} in `{uri}`: `mlflow ui --backend-store-uri {uri}`", description="Its lineage"
        )


def _key(text: str) -> str:
    """An artifact key: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:100]


def _plain(value: object) -> object:
    """A JSON value for the table: NaN (an unscored teacher) as empty, numpy numbers as Python's, rounded."""
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return None if math.isnan(value) else round(float(value), 4)
    return str(value)
