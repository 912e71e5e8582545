"""Publish a selection as an SFT dataset (Hugging Face ``datasets``, chat ``messages``) with a card and lineage.

Layout of one publication, ``<out_root>/<name>/<dataset_id>/``::

    dataset_info.json, state.json, data-*.arrow   datasets.load_from_disk(path)
    data.parquet                                  load_dataset("parquet", data_files=...), pandas, DuckDB
    data.jsonl                                    one JSON row per line (TRL / LLaMA-Factory ``messages`` form)
    README.md                                     dataset card: student, policy, per-teacher RSR, lineage

Crash safety: everything is written into a hidden temporary sibling folder, logged to MLflow from there, and
renamed into place only when complete; only then is the publication row written to DuckDB. Any failure
removes the temporary folder (and the final one if it had just been renamed there), marks the MLflow run
FAILED and writes no row, so a registered publication always points at a whole dataset.

Identity and idempotence: ``content_digest`` hashes the canonical JSON of the rows, sorted by
(problem_id, trajectory_id), so the same selection gives the same digest whatever order it came in.
``dataset_id`` hashes (name, student_id, policy, content_digest). Publishing an identical selection again
returns the registered publication unchanged: no new files, no new MLflow run, no second row. (If its folder
has been deleted meanwhile, the folder is rebuilt, with a new MLflow run, and the row is kept.)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import mlflow.data
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from rsr.select import Candidate, SelectionPolicy
from rsr.store import Store

EXPERIMENT = "rsr-curate"
DIGEST_LEN = 20  # hex chars; fits MLflow's dataset digest column (36)

FEATURES = datasets.Features(
    {
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "trajectory_id": datasets.Value("string"),
        "teacher": datasets.Value("string"),
        "problem_id": datasets.Value("string"),
        "problem": datasets.Value("string"),
        "gold_answer": datasets.Value("string"),
        "verdict": datasets.Value("string"),
        "rsr": datasets.Value("float64"),
        "mean_rank": datasets.Value("float64"),
        "mean_surprisal": datasets.Value("float64"),
        "score_id": datasets.Value("string"),
    }
)


@dataclass(frozen=True)
class Publication:
    dataset_id: str
    path: Path
    n_rows: int
    content_digest: str
    mlflow_run_id: str | None


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (truncated): our own digest, logged to MLflow instead of MLflow's."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:DIGEST_LEN]


def content_digest(rows: Sequence[dict[str, Any]]) -> str:
    """Digest of the rows as canonical JSON lines (keys sorted); rows must already be in canonical order."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, ensure_ascii=False, sort_keys=True).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()[:DIGEST_LEN]


def dataset_id_for(name: str, student_id: str, policy: SelectionPolicy, digest: str) -> str:
    key = json.dumps([name, student_id, policy.model_dump(mode="json"), digest], sort_keys=True)
    return "d-" + hashlib.sha256(key.encode()).hexdigest()[:DIGEST_LEN]


def build_rows(store: Store, selected: Sequence[Candidate]) -> list[dict[str, Any]]:
    """One SFT row per selected candidate, in canonical (problem_id, trajectory_id) order."""
    by_id: dict[str, Candidate] = {}
    for c in selected:
        if c.trajectory_id in by_id:
            raise ValueError(f"trajectory {c.trajectory_id} selected twice; a selection lists each trajectory once")
        by_id[c.trajectory_id] = c
    ids = sorted(by_id, key=lambda t: (by_id[t].problem_id, t))
    trajectories = {t.trajectory_id: t for t in store.get_trajectories(ids)}
    missing = [t for t in ids if t not in trajectories]
    if missing:
        raise ValueError(f"{len(missing)} selected trajectories are not in {store.path} (e.g. {missing[0]})")
    _, verdict_rows = store.query(
        "SELECT trajectory_id, gold_answer, verdict FROM trajectory_verdicts "
        "WHERE trajectory_id IN (SELECT unnest(CAST(? AS VARCHAR[])))",
        [ids],
    )
    gold = {tid: (g, v) for tid, g, v in verdict_rows}
    rows = []
    for tid in ids:
        t, c = trajectories[tid], by_id[tid]
        gold_answer, verdict = gold.get(tid, (t.gold_answer, None))
        rows.append(
            {
                "messages": [{"role": m.role, "content": m.content} for m in t.messages],
                "trajectory_id": tid,
                "teacher": t.teacher,
                "problem_id": t.problem_id,
                "problem": t.problem,
                "gold_answer": gold_answer,
                "verdict": verdict,
                "rsr": c.rsr,
                "mean_rank": c.mean_rank,
                "mean_surprisal": c.mean_surprisal,
                "score_id": c.score_id,
            }
        )
    return rows


def _dataset_rsr(rows: Sequence[dict[str, Any]]) -> float:
    # The paper's dataset RSR over the rows that carry both means (as rsr.select.rank_teachers).
    usable = [r for r in rows if r["mean_rank"] is not None and r["mean_surprisal"] is not None]
    surprisal = sum(r["mean_surprisal"] for r in usable)
    return sum(r["mean_rank"] for r in usable) / surprisal if surprisal > 0 else math.nan


def teacher_stats(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per teacher: n, RSR mean/median/min/max and dataset RSR (sum mean_rank / sum mean_surprisal)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["teacher"]].append(r)
    out = {}
    for teacher in sorted(groups):
        g = groups[teacher]
        rsr = [r["rsr"] for r in g]
        out[teacher] = {
            "n": len(g),
            "rsr_mean": statistics.fmean(rsr),
            "rsr_median": statistics.median(rsr),
            "rsr_min": min(rsr),
            "rsr_max": max(rsr),
            "dataset_rsr": _dataset_rsr(g),
        }
    return out


def _card(
    *,
    name: str,
    dataset_id: str,
    digest: str,
    rows: Sequence[dict[str, Any]],
    stats: dict[str, dict[str, float]],
    student_id: str,
    student_ref: str,
    policy: SelectionPolicy,
    sources: Sequence[tuple[Path, str]],
    run_id: str,
    prefect_flow_run_id: str | None,
    mlflow_run_id: str,
    mlflow_uri: str,
) -> str:
    rsr = [r["rsr"] for r in rows]
    teacher_lines = "\n".join(
        f"| {t} | {s['n']} | {s['rsr_mean']:.4f} | {s['rsr_median']:.4f} | {s['rsr_min']:.4f} | {s['rsr_max']:.4f}"
        f" | {s['dataset_rsr']:.4f} |"
        for t, s in stats.items()
    )
    source_lines = "\n".join(f"| `{p.name}` | `{p}` | `{d}` |" for p, d in sources) or "| (none given) | | |"
    policy_json = policy.model_dump_json()
    return f"""---
configs:
- config_name: default
  data_files: data.parquet
task_categories:
- text-generation
tags:
- sft
- reasoning
- rsr-curate
pretty_name: {name}
---

# {name}

Reasoning trajectories selected for the student **{student_ref}** by their Rank-Surprisal Ratio
(RSR, arXiv 2601.14249; lower = better suited to this student), in chat `messages` form for SFT
(TRL `SFTTrainer`; LLaMA-Factory `sharegpt` formatting with `messages`, role/content tags).

- rows: {len(rows)} over {len({r["problem_id"] for r in rows})} problems and {len(stats)} teachers
- RSR: mean {statistics.fmean(rsr):.4f}, median {statistics.median(rsr):.4f}, min {min(rsr):.4f}, max {max(rsr):.4f}
- student: `{student_ref}` (student_id `{student_id}`)
- policy: `{policy.name}` `{policy_json}`

## Per teacher

| teacher | n | mean RSR | median RSR | min RSR | max RSR | dataset RSR |
|---|---|---|---|---|---|---|
{teacher_lines}

Dataset RSR = sum of per-trajectory mean ranks / sum of per-trajectory mean surprisals (the paper's definition).

## Columns

`messages` (list of `{{role, content}}`), `trajectory_id`, `teacher`, `problem_id`, `problem`, `gold_answer`,
`verdict`, `rsr`, `mean_rank`, `mean_surprisal`, `score_id` (the score row in the curation database).

## Usage

```python
from datasets import load_from_disk, load_dataset
ds = load_from_disk("<this folder>")                                  # Arrow
ds = load_dataset("parquet", data_files="<this folder>/data.parquet")  # or data.jsonl with "json"
```

## Lineage

| | |
|---|---|
| dataset_id | `{dataset_id}` |
| content digest | `{digest}` (sha256 of the canonical rows, truncated) |
| curation run | `{run_id}` |
| Prefect flow run | `{prefect_flow_run_id or "-"}` |
| MLflow run | `{mlflow_run_id}` (experiment `{EXPERIMENT}`, `{mlflow_uri}`) |

Per-row lineage (trajectory -> score row -> scoring run) is in the DuckDB view `dataset_lineage`.

Source files (digest = sha256 of the file bytes, truncated):

| file | path | digest |
|---|---|---|
{source_lines}
"""


def _write_files(folder: Path, rows: Sequence[dict[str, Any]], card: str) -> datasets.Dataset:
    ds = datasets.Dataset.from_list(list(rows), features=FEATURES)
    ds.save_to_disk(str(folder))
    ds.to_parquet(str(folder / "data.parquet"))
    with open(folder / "data.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (folder / "README.md").write_text(card, encoding="utf-8")
    return ds


def _metric_key(text: str) -> str:
    # MLflow keys allow only alphanumerics and _ - . space : /
    return re.sub(r"[^\w\-. :/]", "_", text)


def _experiment_id(client: MlflowClient, artifacts: Path) -> str:
    """The "rsr-curate" experiment, created with its artifacts under the state folder if missing."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        artifacts.mkdir(parents=True, exist_ok=True)
        try:
            return client.create_experiment(EXPERIMENT, artifact_location=artifacts.resolve().as_uri())
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":  # lost a creation race: use the winner's
                raise
            exp = client.get_experiment_by_name(EXPERIMENT)
            assert exp is not None
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def _local_source(path: Path) -> Any:
    # Built from JSON rather than resolve_dataset_source(), which warns that a local path is ambiguous.
    return get_dataset_source_from_json(json.dumps({"uri": str(path)}), "local")


def _log_run(
    client: MlflowClient,
    mlflow_run_id: str,
    *,
    folder: Path,
    final: Path,
    name: str,
    rows: Sequence[dict[str, Any]],
    stats: dict[str, dict[str, float]],
    params: dict[str, Any],
    sources: Sequence[tuple[Path, str]],
    digest: str,
) -> None:
    now = int(time.time() * 1000)
    rsr = [r["rsr"] for r in rows]
    metrics = {
        "n_rows": len(rows),
        "n_teachers": len(stats),
        "n_problems": len({r["problem_id"] for r in rows}),
        "rsr_mean": statistics.fmean(rsr),
        "rsr_median": statistics.median(rsr),
        "dataset_rsr": _dataset_rsr(rows),
    }
    for teacher, s in stats.items():
        metrics[_metric_key(f"n_rows.{teacher}")] = s["n"]
        metrics[_metric_key(f"rsr_mean.{teacher}")] = s["rsr_mean"]
    client.log_batch(
        mlflow_run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
    )

    def context(value: str) -> list[InputTag]:
        return [InputTag(key=MLFLOW_DATASET_CONTEXT, value=value)]

    inputs = [
        DatasetInput(
            MetaDataset(_local_source(p.resolve()), name=p.name, digest=d)._to_mlflow_entity(), context("source")
        )
        for p, d in sources
    ]
    # MLflow has no dataset outputs; the published dataset is an input tagged context=published.
    published = mlflow.data.from_pandas(pd.DataFrame(rows), source=_local_source(final), name=name, digest=digest)
    inputs.append(DatasetInput(published._to_mlflow_entity(), context("published")))
    client.log_inputs(mlflow_run_id, datasets=inputs)
    client.log_artifacts(mlflow_run_id, str(folder), "dataset")


def _settle_interrupted_runs(
    client: MlflowClient, experiment_id: str, dataset_id: str, registered_run_id: str | None
) -> None:
    """Close the MLflow runs that a killed publish of this dataset left RUNNING.

    Called under the state folder's writer lock, so no live publish of this dataset exists. The registered run
    logged everything before it was registered (only its end was lost): FINISHED. Any other was abandoned before
    registering, and its files were never used: KILLED.
    """
    stale = client.search_runs(
        [experiment_id], filter_string=f"tags.`rsr.dataset_id` = '{dataset_id}' AND attributes.status = 'RUNNING'"
    )
    for run in stale:
        done = run.info.run_id == registered_run_id
        client.set_tag(run.info.run_id, "rsr.settled", "interrupted after registering" if done else "abandoned")
        client.set_terminated(run.info.run_id, "FINISHED" if done else "KILLED")


def _move_into_place(tmp: Path, final: Path) -> None:
    """Atomic rename; a complete-but-unregistered leftover at `final` (crash after rename) is replaced."""
    if final.exists():
        aside = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, aside)
        os.rename(tmp, final)
        shutil.rmtree(aside)
    else:
        os.rename(tmp, final)


def publish_dataset(
    store: Store,
    selected: Sequence[Candidate],
    *,
    out_root: Path,
    name: str,
    student_id: str,
    student_ref: str,
    policy: SelectionPolicy,
    source_files: Sequence[Path],
    run_id: str,
    prefect_flow_run_id: str | None,
    mlflow_uri: str,
    mlflow_artifacts: Path,
) -> Publication:
    """Write the selection as a dataset under ``out_root/name/dataset_id``, log it to MLflow, register it."""
    if not selected:
        raise ValueError(f"publish {name!r}: nothing selected for {student_ref}; relax the policy or score more")
    if not re.fullmatch(r"[\w][\w.\-]*", name):
        raise ValueError(f"dataset name {name!r}: use letters, digits, '.', '-', '_' (it becomes a folder name)")
    rows = build_rows(store, selected)
    digest = content_digest(rows)
    dataset_id = dataset_id_for(name, student_id, policy, digest)
    final = Path(out_root) / name / dataset_id
    existing = store.get_publication(dataset_id)
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment_id = _experiment_id(client, Path(mlflow_artifacts))
    _settle_interrupted_runs(client, experiment_id, dataset_id, existing["mlflow_run_id"] if existing else None)
    if existing is not None and final.is_dir():
        return Publication(dataset_id, final, existing["n_rows"], digest, existing["mlflow_run_id"])

    sources = [(Path(p), file_digest(Path(p))) for p in source_files]
    stats = teacher_stats(rows)
    tags = {"rsr.run_id": run_id, "rsr.dataset_id": dataset_id, "rsr.student_id": student_id}
    if prefect_flow_run_id:
        tags["prefect.flow_run_id"] = prefect_flow_run_id
    run = client.create_run(experiment_id, run_name=f"publish-{name}", tags=tags)
    mlflow_run_id = run.info.run_id
    params: dict[str, Any] = {
        "name": name,
        "dataset_id": dataset_id,
        "content_digest": digest,
        "student_id": student_id,
        "student_ref": student_ref,
        "policy": policy.name,
        "policy.k": policy.k,
        "policy.threshold": policy.threshold,
        "policy.verified_only": policy.verified_only,
        "policy.exclude_duplicates": policy.exclude_duplicates,
        "n_source_files": len(sources),
    }
    card = _card(
        name=name,
        dataset_id=dataset_id,
        digest=digest,
        rows=rows,
        stats=stats,
        student_id=student_id,
        student_ref=student_ref,
        policy=policy,
        sources=sources,
        run_id=run_id,
        prefect_flow_run_id=prefect_flow_run_id,
        mlflow_run_id=mlflow_run_id,
        mlflow_uri=mlflow_uri,
    )

    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{dataset_id}.tmp-*"):  # left by a killed earlier attempt
        shutil.rmtree(stale)
    tmp = final.parent / f".{dataset_id}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    moved = False
    try:
        _write_files(tmp, rows, card)
        _log_run(
            client,
            mlflow_run_id,
            folder=tmp,
            final=final,
            name=name,
            rows=rows,
            stats=stats,
            params=params,
            sources=sources,
            digest=digest,
        )
        _move_into_place(tmp, final)
        moved = True
        if existing is None:
            store.record_publication(
                dataset_id=dataset_id,
                name=name,
                path=final,
                student_id=student_id,
                policy=policy.name,
                params={
                    "policy": policy.model_dump(mode="json"),
                    "student_ref": student_ref,
                    "prefect_flow_run_id": prefect_flow_run_id,
                    "sources": [{"path": str(p), "digest": d} for p, d in sources],
                },
                n_rows=len(rows),
                content_digest=digest,
                mlflow_run_id=mlflow_run_id,
                run_id=run_id,
                items=[(r["trajectory_id"], r["score_id"]) for r in rows],
            )
    except BaseException:
        # Undo everything visible: no folder at the final path, no row (never written), run marked FAILED.
        shutil.rmtree(tmp, ignore_errors=True)  # best effort: the original error is what matters
        if moved:
            shutil.rmtree(final, ignore_errors=True)
        client.set_terminated(mlflow_run_id, "FAILED")
        raise
    client.set_terminated(mlflow_run_id, "FINISHED")
    return Publication(dataset_id, final, len(rows), digest, mlflow_run_id)
