"""MLflow lineage of a publication: which tracking server, the experiment, and one run per published dataset.

The run holds the publication's params and metrics, its dataset inputs (each ingested source file with the
digest taken when it was ingested, context ``source``; the published dataset with its content digest, context
``published``: MLflow has no dataset outputs) and the dataset folder itself as the artifact ``dataset/``.

Which server: ``--mlflow-uri`` > the pipeline config's ``mlflow_uri`` > ``$MLFLOW_TRACKING_URI`` > the state
folder's own SQLite store (embedded default). Only the embedded store keeps artifacts in the state folder
(``mlartifacts/``); a team's server keeps them wherever it serves them from (``mlflow server --serve-artifacts``).

Only MLflow's public client API is used: ``MlflowClient`` calls and ``mlflow.entities`` built from
``mlflow.data`` datasets' public ``to_dict()``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.data
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from rsr.publish.manifest import DIGEST_LEN, Manifest
from rsr.settings import StateDir, settings

EXPERIMENT = "rsr-curate"


@dataclass(frozen=True)
class Tracking:
    """Where MLflow runs go: a tracking URI, and where a new experiment keeps its artifacts (None: the server's
    default, e.g. its proxied ``mlflow-artifacts:/`` store)."""

    uri: str
    artifacts: Path | None = None

    @classmethod
    def resolve(cls, state: StateDir, flag: str | None = None, config: str | None = None) -> Tracking:
        """flag > config > $MLFLOW_TRACKING_URI > the state folder's SQLite store (artifacts beside it)."""
        for uri in (flag, config, settings().mlflow_tracking_uri):
            if uri and uri.strip():
                return cls(uri.strip())
        return cls(f"sqlite:///{state.mlflow_db}", state.mlflow_artifacts)

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)


def experiment_id(client: MlflowClient, tracking: Tracking) -> str:
    """The "rsr-curate" experiment, created if missing (a lost creation race uses the winner's), restored if deleted.
    MLflow creates the artifact folder itself on the first upload."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        location = tracking.artifacts.resolve().as_uri() if tracking.artifacts else None
        try:
            return client.create_experiment(EXPERIMENT, artifact_location=location)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(EXPERIMENT)
            assert exp is not None
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def settle_interrupted_runs(
    client: MlflowClient, experiment: str, name: str, registered_run: Callable[[str], str | None]
) -> None:
    """Close the MLflow runs that killed publishes of datasets named `name` left RUNNING, whatever they selected.

    Called under the state folder's writer lock, so no live publish of this name exists. A run its dataset's
    registration names (``registered_run(dataset_id)``) logged everything before it was registered (only its end was
    lost): FINISHED. Any other was abandoned before registering, and its files are removed: KILLED.
    """
    stale = client.search_runs(
        [experiment], filter_string=f"attributes.run_name = 'publish-{name}' AND attributes.status = 'RUNNING'"
    )
    for run in stale:
        done = run.info.run_id == registered_run(run.data.tags.get("rsr.dataset_id", ""))
        client.set_tag(run.info.run_id, "rsr.settled", "interrupted after registering" if done else "abandoned")
        client.set_terminated(run.info.run_id, "FINISHED" if done else "KILLED")


def start_run(client: MlflowClient, experiment: str, m: Manifest) -> str:
    tags = {"rsr.run_id": m.run_id, "rsr.dataset_id": m.dataset_id, "rsr.student_id": m.student_id}
    if m.prefect_flow_run_id:
        tags["prefect.flow_run_id"] = m.prefect_flow_run_id
    if (c := m.companion) is not None:
        # Each run names the other: the baseline's when it is created (the selection's run exists by then), the
        # selection's once the baseline's exists (link_baseline).
        tags["rsr.role"] = c.role
        if c.role == "selection":
            tags["rsr.baseline_dataset_id"] = c.other_dataset_id
        else:
            tags |= {"rsr.matches_dataset_id": c.other_dataset_id, "rsr.matches_run_id": c.other_mlflow_run_id or ""}
    return client.create_run(experiment, run_name=f"publish-{m.name}", tags=tags).info.run_id


def link_baseline(client: MlflowClient, selection_run_id: str, baseline_run_id: str) -> None:
    """The selection's run names its baseline's (the baseline's run was created naming the selection's)."""
    client.set_tag(selection_run_id, "rsr.baseline_run_id", baseline_run_id)


def redact(uri: str) -> str:
    """The URI without credentials (https://user:token@host -> https://host): safe for cards and params."""
    return re.sub(r"//[^/@]+@", "//", uri)


def _params(m: Manifest) -> dict[str, Any]:
    policy = {f"policy.{k}": v for k, v in m.policy.model_dump(mode="json").items() if k != "name"}
    ids = {k: getattr(m, k) for k in ("name", "dataset_id", "content_digest", "student_id", "student_ref")}
    pair = {}
    if m.companion is not None:  # the seed and the two names, on both runs
        pair = {f"baseline.{k}": getattr(m.companion, k) for k in ("role", "seed", "selection", "random")}
    checked = {"decontamination.benchmarks": ",".join(b.name for b in m.benchmarks) or "none"}
    checked["decontamination.include_contaminated"] = m.include_contaminated
    for b in m.benchmarks:  # per benchmark: what it is (digest, revision, source) and what it removed
        key = mlflow_key("benchmark", b.name)
        checked |= {f"{key}.{k}": v for k, v in (("digest", b.digest), ("revision", b.revision or "-"),
                                                   ("source", b.source), ("removed", b.removed))}  # fmt: skip
    return {**ids, "policy": m.policy.name, **policy, "n_source_files": len(m.sources), **pair, **checked}


KEY_LIMIT = 250  # MLflow's longest metric/param key


def mlflow_key(prefix: str, name: str) -> str:
    """`prefix.name` as an MLflow key for any name. MLflow keys allow only alphanumerics and `_ - . space : /` and
    must not change as a path (no `//`, `/../`, trailing `/`): other characters and every `/` become `_`, and a name
    that had to change (or be cut to fit) gets a digest of itself, so two teachers never share a key."""
    safe = re.sub(r"[^\w\-. :]|[^\x00-\x7f]", "_", name).strip(" .") or "_"
    room = KEY_LIMIT - len(prefix) - 1
    if safe == name and len(safe) <= room:
        return f"{prefix}.{name}"
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{prefix}.{safe[: room - len(digest) - 1]}:{digest}"


def _metrics(m: Manifest) -> dict[str, float]:
    per_teacher = {mlflow_key(k, teacher): t[k] for teacher, t in m.teachers.items() for k in ("n_rows", "rsr_mean")}
    return {
        **{k: m.stats[k] for k in ("n_rows", "rsr_mean", "rsr_median", "dataset_rsr")},
        "n_teachers": len(m.teachers),
        "n_problems": m.n_problems,
        "response_tokens": m.response_tokens,
        **{f"selection.{k}": v for k, v in m.counts.items()},
        **per_teacher,
    }


def _inputs(m: Manifest, final: Path) -> list[DatasetInput]:
    def local(name: str, digest: str, uri: str, **extra: str) -> dict[str, str]:
        # A local path source, as mlflow.data's LocalArtifactDatasetSource writes it (type "local", {"uri": ...}).
        return {"name": name, "digest": digest, "source_type": "local", "source": json.dumps({"uri": uri, **extra})}

    # Sources: the sha256 taken at ingest (full in the source JSON; MLflow's digest column holds 36 chars).
    sources = [local(Path(s.path).name, s.sha256[:DIGEST_LEN], s.path, sha256=s.sha256) for s in m.sources]
    # The published dataset with MLflow's schema (public to_dict(); inferred from a sample: every row has the
    # same columns) and the profile MLflow would compute on all rows, without a DataFrame of all of them.
    sample = mlflow.data.from_pandas(pd.DataFrame(m.rows[:100]), name=m.name, digest=m.content_digest).to_dict()
    profile = json.dumps({"num_rows": len(m.rows), "num_elements": len(m.rows) * len(m.rows[0])})
    published = {**local(m.name, m.content_digest, str(final)), "schema": sample.get("schema"), "profile": profile}
    # The benchmarks every trajectory was checked against, by the digest of their problems (context "benchmark").
    checked = [
        {"name": b.name, "digest": b.digest[:DIGEST_LEN], "source_type": "hub" if b.kind == "hub" else "local",
         "source": json.dumps({"uri": b.source, "revision": b.revision, "sha256": b.digest, "problems": b.n_problems})}
        for b in m.benchmarks
    ]  # fmt: skip
    tags = {c: [InputTag(key=MLFLOW_DATASET_CONTEXT, value=c)] for c in ("source", "published", "benchmark")}
    inputs = [DatasetInput(DatasetEntity(**d), tags["source"]) for d in sources]
    inputs += [DatasetInput(DatasetEntity(**d), tags["benchmark"]) for d in checked]
    return [*inputs, DatasetInput(DatasetEntity(**published), tags["published"])]


def log_publication(client: MlflowClient, run_id: str, m: Manifest, folder: Path, final: Path) -> None:
    """Params, metrics, dataset inputs (sources + the published dataset) and the folder as artifact ``dataset/``."""
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in _metrics(m).items()],
        params=[Param(k, str(v)) for k, v in _params(m).items()],
    )
    client.log_inputs(run_id, datasets=_inputs(m, final))
    client.log_artifacts(run_id, str(folder), "dataset")
