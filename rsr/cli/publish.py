"""`rsr publish`: select a registered student's trajectories by policy and publish them with lineage."""

from __future__ import annotations

from typing import Annotated

import typer

from rsr.cli.app import app
from rsr.cli.errors import user_errors
from rsr.cli.options import (
    ChatTemplateOpt,
    ContaminatedOpt,
    Dtype,
    MlflowOpt,
    Policy,
    RevisionOpt,
    StateOpt,
    StudentOpt,
    TemplateKwargsOpt,
    state,
    student_spec,
)


@app.command()
def publish(
    student: StudentOpt = "smollm2-135m",
    revision: RevisionOpt = None,
    chat_template: ChatTemplateOpt = None,
    chat_template_kwargs: TemplateKwargsOpt = None,
    dtype: Annotated[Dtype, typer.Option("--dtype", metavar="DTYPE", help="the dtype of the scores to select by")] = (
        Dtype.auto
    ),
    policy: Annotated[
        Policy, typer.Option(metavar="POLICY", help="per_problem_min_rsr | top_teachers | rsr_threshold")
    ] = Policy.per_problem_min_rsr,  # fmt: skip
    k: Annotated[int, typer.Option(help="top_teachers: how many teachers")] = 1,
    threshold: Annotated[float | None, typer.Option(help="rsr_threshold: keep rsr <= this")] = None,
    include_unverified: Annotated[
        bool, typer.Option("--include-unverified", help="also keep answers not verified correct")
    ] = False,
    include_duplicates: Annotated[bool, typer.Option("--include-duplicates", help="also keep duplicates")] = False,
    include_truncated: Annotated[
        bool, typer.Option("--include-truncated", help="let trajectories scored on a truncated prefix in")
    ] = False,
    name: Annotated[str | None, typer.Option(help="dataset name (default: sft-<model name>)")] = None,
    mlflow_uri: MlflowOpt = None,
    push_to_hub: Annotated[
        str | None,
        typer.Option(metavar="REPO", help="also upload to this HF dataset repo (datasets' push; token: HF_TOKEN)"),
    ] = None,
    state_folder: StateOpt = None,
    include_contaminated: ContaminatedOpt = False,
) -> None:
    """Select by policy and publish an SFT dataset with lineage.

    datasets + Parquet + JSONL + card. The student is a registered one: its id, or its ref and what tells it
    apart (docs/students.md)."""
    spec = student_spec(student, revision, chat_template, chat_template_kwargs, dtype)
    home = state(state_folder)
    from rsr.select import SelectionPolicy
    from rsr_flows.publish import publish_dataset

    with user_errors():
        pol = SelectionPolicy(
            name=policy.value,
            k=k,
            threshold=threshold,
            verified_only=not include_unverified,
            exclude_duplicates=not include_duplicates,
            include_truncated=include_truncated,
        )
        result = publish_dataset(spec, pol, name, mlflow_uri=mlflow_uri, push_to_hub=push_to_hub, state=str(home.root),
                                 include_contaminated=include_contaminated)  # fmt: skip
    pub = result.publication
    typer.echo(f"published {pub.n_rows} rows of {result.student_id} to {pub.path} (MLflow run {pub.mlflow_run_id})")
    if result.hub_commit_url:
        typer.echo(f"pushed to the Hub: {result.hub_commit_url}")
