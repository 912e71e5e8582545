"""`rsr publish`: select a registered student's trajectories by policy and publish them with lineage."""

from __future__ import annotations

from typing import Annotated

import typer

from rsr.cli.app import app
from rsr.cli.errors import user_errors
from rsr.cli.options import (
    BaselineKind,
    ChatTemplateOpt,
    ContaminatedOpt,
    Dtype,
    Metric,
    MlflowOpt,
    Policy,
    RevisionOpt,
    StateOpt,
    StudentOpt,
    TemplateKwargsOpt,
    state,
    student_spec,
)

# The selection's options (the student's are the shared set: rsr/cli/options.py).
ScoresDtypeOpt = Annotated[Dtype, typer.Option("--dtype", metavar="DTYPE", help="the dtype of the scores to select by")]
PolicyOpt = Annotated[Policy, typer.Option(metavar="POLICY", help="per_problem_min_rsr | top_teachers | rsr_threshold")]
MetricOpt = Annotated[
    Metric,
    typer.Option(
        metavar="METRIC",
        help="rsr | mean_surprisal | mean_entropy | length: the stored metric the policy ranks by, lowest first",
    ),
]
BaselineOpt = Annotated[
    BaselineKind | None,
    typer.Option(
        metavar="random", help="also publish <name>-random: a seeded random pick with the selection's response tokens"
    ),
]
UnverifiedOpt = Annotated[bool, typer.Option("--include-unverified", help="also keep answers not verified correct")]
DuplicatesOpt = Annotated[bool, typer.Option("--include-duplicates", help="also keep duplicates")]
TruncatedOpt = Annotated[
    bool, typer.Option("--include-truncated", help="let trajectories scored on a truncated prefix in")
]
HubOpt = Annotated[
    str | None,
    typer.Option(metavar="REPO", help="also upload to this HF dataset repo (datasets' push; token: HF_TOKEN)"),
]


@app.command()
def publish(
    student: StudentOpt = "smollm2-135m",
    revision: RevisionOpt = None,
    chat_template: ChatTemplateOpt = None,
    chat_template_kwargs: TemplateKwargsOpt = None,
    dtype: ScoresDtypeOpt = Dtype.auto,
    policy: PolicyOpt = Policy.per_problem_min_rsr,
    k: Annotated[int, typer.Option(help="top_teachers: how many teachers")] = 1,
    threshold: Annotated[float | None, typer.Option(help="rsr_threshold: keep rsr <= this")] = None,
    metric: MetricOpt = Metric.rsr,
    include_unverified: UnverifiedOpt = False,
    include_duplicates: DuplicatesOpt = False,
    include_truncated: TruncatedOpt = False,
    include_contaminated: ContaminatedOpt = False,
    baseline: BaselineOpt = None,
    baseline_seed: Annotated[int, typer.Option(min=0, help="the random baseline's seed")] = 0,
    name: Annotated[str | None, typer.Option(help="dataset name (default: sft-<model name>)")] = None,
    mlflow_uri: MlflowOpt = None,
    push_to_hub: HubOpt = None,
    state_folder: StateOpt = None,
) -> None:
    """Select by policy and publish an SFT dataset with lineage.

    datasets + Parquet + JSONL + card. The student is a registered one: its id, or its ref and what tells it
    apart (docs/students.md)."""
    spec = student_spec(student, revision, chat_template, chat_template_kwargs, dtype)
    home = state(state_folder)
    from rsr.select import Baseline, SelectionPolicy
    from rsr_flows.publish import publish_dataset

    with user_errors():
        pol = SelectionPolicy(name=policy.value, k=k, threshold=threshold, verified_only=not include_unverified,
                              exclude_duplicates=not include_duplicates, include_truncated=include_truncated,
                              metric=metric.value)  # fmt: skip
        random = Baseline(kind=baseline.value, seed=baseline_seed) if baseline else None
        result = publish_dataset(spec, pol, name, mlflow_uri=mlflow_uri, push_to_hub=push_to_hub, state=str(home.root),
                                 include_contaminated=include_contaminated, baseline=random)  # fmt: skip
    _said_published(result, baseline_seed)


def _said_published(result, seed: int) -> None:  # noqa: ANN001 (rsr_flows is imported lazily)
    pub = result.publication
    typer.echo(f"published {pub.n_rows} rows of {result.student_id} to {pub.path} (MLflow run {pub.mlflow_run_id})")
    if pub.baseline is not None:
        base = pub.baseline
        typer.echo(f"and its random baseline (seed {seed}, the same response tokens within 2%): "
                   f"{base.n_rows} rows to {base.path} (MLflow run {base.mlflow_run_id})")  # fmt: skip
    if result.hub_commit_url:
        typer.echo(f"pushed to the Hub: {result.hub_commit_url}")
