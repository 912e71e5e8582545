"""Publish a selection as an SFT dataset (Hugging Face ``datasets``, chat ``messages``) with a card and lineage.

    publish_selection(store, chosen, Request(name, student_id, student_ref, policy, run_id), out_root=...,
                      tracking=Tracking.resolve(state), sources=source_files(store, chosen))

Layout of one publication, ``<out_root>/<name>/<dataset_id>/``::

    dataset_info.json, state.json, data-*.arrow   datasets.load_from_disk(path)
    data.parquet                                  load_dataset("parquet", data_files=...), pandas, DuckDB
    data.jsonl                                    one JSON row per line (TRL / LLaMA-Factory ``messages`` form)
    README.md                                     dataset card (card.py): student, policy, teachers, lineage

Three steps, three modules: the files and the card (here and ``card``), the MLflow run (``lineage``),
the registration in DuckDB (``Store.record_publication``).

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

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import datasets
import pandas as pd

from rsr.publish import card, lineage
from rsr.publish.lineage import Tracking
from rsr.publish.manifest import (
    BenchmarkUse,
    Manifest,
    Publication,
    Request,
    content_digest,
    dataset_id_for,
    rsr_stats,
)
from rsr.records import Message
from rsr.select import TOKEN_TOLERANCE
from rsr.store.queries import Candidate, SourceFile
from rsr.store.writer import Store

_STRING = ("trajectory_id", "teacher", "problem_id", "problem", "gold_answer", "verdict")
_TEXT = datasets.Value("string")
MESSAGE = {"role": _TEXT, "content": _TEXT}


def tool_keys(arguments: datasets.Value | datasets.Json = _TEXT) -> dict:
    """Agent rows: the keys a template reads for tool use. Arguments are JSON text (records.Message's wire form),
    or a `Json` value (a mapping of any keys, read back as the same dict) for a student whose template is given
    mappings (rsr/score/render.py probe_tool_calls): a struct would give every row every key, null where absent."""
    call = {"id": _TEXT, "type": _TEXT, "function": {"name": _TEXT, "arguments": arguments}}
    return {"tool_calls": datasets.List(call), "name": _TEXT, "tool_call_id": _TEXT}


TOOL_KEYS = tool_keys()


REASONING_KEYS = ("reasoning_content", "thinking")  # rsr.score.render.REASONING_FIELDS, as published


def features(rows: Sequence[dict[str, Any]]) -> datasets.Features:
    """The published columns; tool keys in `messages` only when some row uses tools (Arrow gives every message
    every key, and a template such as Llama 3.1's tests `'tool_calls' in message`), prompt/completion when the
    student's template rewrites assistant text (the text that was scored, to train on)."""
    tools = any(k in m for r in rows for m in r["messages"] for k in TOOL_KEYS)
    # The reasoning field the student's template reads, where the rows carry reasoning in it (Renderer.native).
    fields = {k: _TEXT for k in REASONING_KEYS if any(k in m for r in rows for m in r["messages"])}
    calls = [c for r in rows for m in r["messages"] for c in m.get("tool_calls") or []]
    mappings = any(not isinstance(c["function"]["arguments"], str) for c in calls)
    keys = tool_keys(datasets.Json() if mappings else _TEXT) if tools else {}
    cols = {"messages": datasets.List(MESSAGE | fields | keys)}
    if rows and "prompt" in rows[0]:
        cols |= {"prompt": _TEXT, "completion": _TEXT}
    if rows and "tools" in rows[0]:
        cols |= {"tools": _TEXT}
    return datasets.Features(
        cols
        | {k: _TEXT for k in _STRING}
        | {k: datasets.Value("float64") for k in ("rsr", "mean_rank", "mean_surprisal")}
        | {"score_id": _TEXT}
    )


def manifest_for(
    store: Store,
    selected: Sequence[Candidate],
    req: Request,
    sources: Sequence[SourceFile],
    counts: dict,
    benchmarks: Sequence[BenchmarkUse] = (),
    include_contaminated: bool = False,
) -> Manifest:
    """Everything the publication will say about itself, computed before anything is written. Raises ValueError
    for an empty selection or a name that cannot be a folder."""
    if not selected:
        raise ValueError(
            f"publish {req.name!r}: nothing selected for {req.student_ref}; relax the policy or score more"
        )
    if not re.fullmatch(r"[\w][\w.\-]*", req.name):
        raise ValueError(f"dataset name {req.name!r}: use letters, digits, '.', '-', '_' (it becomes a folder name)")
    rows = build_rows(store, selected, req.split)
    digest = content_digest(rows)
    checked = [f"{b.name}@{b.digest}" for b in benchmarks]
    frame = pd.DataFrame(rows, columns=["teacher", "problem_id", "rsr", "mean_rank", "mean_surprisal"])
    return Manifest(
        **vars(req),
        rows=rows,
        content_digest=digest,
        dataset_id=dataset_id_for(
            req.name, req.student_id, req.policy, digest, req.companion, checked, include_contaminated
        ),
        sources=list(sources),
        stats=rsr_stats(frame),
        teachers={str(t): rsr_stats(g) for t, g in frame.groupby("teacher", sort=True)},
        n_problems=frame["problem_id"].nunique(),
        counts=dict(counts),
        response_tokens=sum(c.n_tokens for c in selected),
        benchmarks=list(benchmarks),
        include_contaminated=include_contaminated,
    )


def source_files(store: Store, chosen: Sequence[Candidate]) -> list[SourceFile]:
    """The ingested inputs the chosen rows came from, with the digests taken at ingest (one per path+digest)."""
    paths = store.source_paths([c.trajectory_id for c in chosen])
    unique = {(s.path, s.sha256): s for s in store.source_files(paths=paths)}
    return [unique[k] for k in sorted(unique)]


Split = Callable[[list[dict], list[dict] | None], dict[str, Any]]  # (messages, tools) -> the student's columns


def chat_columns(messages: list[dict], tools: list[dict] | None, split: Split | None = None) -> dict[str, Any]:
    """A row's chat as a trainer must read it: `messages` as scored, `tools` (the function schemas the template was
    given; JSON text, which TRL's SFTTrainer reads) and what `split` makes of both (the student's own form of
    `messages`, or the prompt/completion text that was scored)."""
    out: dict[str, Any] = {"messages": [Message(**m).for_template() for m in messages]}
    out["tools"] = None if tools is None else json.dumps(tools, ensure_ascii=False)
    return out | (split(out["messages"], tools) if split is not None else {})


def build_rows(store: Store, selected: Sequence[Candidate], split: Split | None = None) -> list[dict[str, Any]]:
    """One SFT row per selected candidate, in canonical (problem_id, trajectory_id) order; with `split`, the
    student's form of each chat (see chat_columns). A `tools` column only when some row has tools (so rows without
    keep their digest)."""
    by_id: dict[str, Candidate] = {}
    for c in selected:
        if c.trajectory_id in by_id:
            raise ValueError(f"trajectory {c.trajectory_id} selected twice; a selection lists each trajectory once")
        by_id[c.trajectory_id] = c
    rows = store.sft_rows(list(by_id))
    missing = sorted(set(by_id) - {r["trajectory_id"] for r in rows})
    if missing:
        raise ValueError(f"{len(missing)} selected trajectories are not in {store.path} (e.g. {missing[0]})")
    for row in rows:
        tools = row.pop("tools")
        row |= chat_columns(json.loads(row.pop("messages")), None if tools is None else json.loads(tools), split)
        row |= {k: getattr(by_id[row["trajectory_id"]], k) for k in ("rsr", "mean_rank", "mean_surprisal", "score_id")}
    if all(row["tools"] is None for row in rows):
        for row in rows:
            del row["tools"]
    return rows


def write_files(folder: Path, rows: Sequence[dict[str, Any]], readme: str) -> None:
    """Arrow (save_to_disk), Parquet, JSONL and the card into ``folder``."""
    ds = datasets.Dataset.from_list(list(rows), features=features(rows))
    ds.save_to_disk(str(folder))
    ds.to_parquet(str(folder / "data.parquet"))
    with open(folder / "data.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (folder / "README.md").write_text(readme, encoding="utf-8")


def _move_into_place(tmp: Path, final: Path) -> None:
    """Atomic rename; a complete-but-unregistered leftover at `final` (crash after rename) is replaced."""
    if final.exists():
        aside = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, aside)
        os.rename(tmp, final)
        shutil.rmtree(aside)
    else:
        os.rename(tmp, final)


def _remove_unregistered(store: Store, folder: Path) -> None:
    """A killed publish may leave a complete folder that was never registered (killed after the rename): no row
    points at it, so nobody will, and its MLflow run is KILLED (lineage.settle_interrupted_runs). Remove it."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.name.startswith(".") and not store.get_publication(child.name):
            shutil.rmtree(child)


def _fresh_tmp(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed earlier attempt
        shutil.rmtree(stale)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def _register(store: Store, m: Manifest, final: Path, mlflow_run_id: str, tracking: Tracking) -> None:
    params = {
        "policy": m.policy.model_dump(mode="json"),
        "student_ref": m.student_ref,
        "prefect_flow_run_id": m.prefect_flow_run_id,
        "sources": [{"path": s.path, "sha256": s.sha256, "kind": s.kind} for s in m.sources],
        "selection": m.counts,
        "mlflow_uri": lineage.redact(tracking.uri),  # where its run lives (`rsr report` logs there too)
        "response_tokens": m.response_tokens,
        "benchmarks": [asdict(b) for b in m.benchmarks],  # what every trajectory was checked against
        "include_contaminated": m.include_contaminated,
    }
    if m.companion is not None:  # a selection and its random baseline name each other (Reader.latest_publication)
        params["baseline"] = asdict(m.companion) | {"tolerance": TOKEN_TOLERANCE}
    publication = {k: getattr(m, k) for k in ("dataset_id", "name", "student_id", "content_digest", "run_id")}
    publication |= {"path": final, "policy": m.policy.name, "params": params, "n_rows": len(m.rows)}
    publication["mlflow_run_id"] = mlflow_run_id
    store.record_publication(publication, [(r["trajectory_id"], r["score_id"]) for r in m.rows])


def publish_selection(
    store: Store,
    selected: Sequence[Candidate],
    req: Request,
    *,
    out_root: Path,
    tracking: Tracking,
    sources: Sequence[SourceFile] = (),
    counts: dict[str, int] | None = None,
    benchmarks: Sequence[BenchmarkUse] = (),
    include_contaminated: bool = False,
) -> Publication:
    """Write the selection under ``out_root/name/dataset_id``, log it to MLflow, register it in DuckDB.
    ``benchmarks``: what the trajectories were checked against (the card and the MLflow run name them)."""
    m = manifest_for(store, selected, req, sources, counts or {}, benchmarks, include_contaminated)
    return publish_manifest(store, m, out_root, tracking)


def publish_manifest(store: Store, m: Manifest, out_root: Path, tracking: Tracking) -> Publication:
    """Publish what the manifest says (the files, the MLflow run, the DuckDB row); an identical publication already
    registered is returned as it is."""
    final = Path(out_root) / m.name / m.dataset_id
    existing = store.get_publication(m.dataset_id)
    client = tracking.client()
    experiment = lineage.experiment_id(client, tracking)
    lineage.settle_interrupted_runs(
        client, experiment, m.name, lambda d: (store.get_publication(d) or {}).get("mlflow_run_id")
    )
    _remove_unregistered(store, final.parent)
    if existing is not None and final.is_dir():
        return Publication(m.dataset_id, final, existing["n_rows"], m.content_digest, existing["mlflow_run_id"])

    mlflow_run_id = lineage.start_run(client, experiment, m)
    tmp = _fresh_tmp(final)
    moved = False
    try:
        write_files(tmp, m.rows, str(card.build(m, mlflow_run_id, tracking.uri)))
        lineage.log_publication(client, mlflow_run_id, m, tmp, final)
        _move_into_place(tmp, final)
        moved = True
        if existing is None:
            _register(store, m, final, mlflow_run_id, tracking)
    except BaseException:
        # Undo everything visible: no folder at the final path, no row (never written), run marked FAILED.
        shutil.rmtree(tmp, ignore_errors=True)  # best effort: the original error is what matters
        if moved:
            shutil.rmtree(final, ignore_errors=True)
        client.set_terminated(mlflow_run_id, "FAILED")
        raise
    client.set_terminated(mlflow_run_id, "FINISHED")
    return Publication(m.dataset_id, final, len(m.rows), m.content_digest, mlflow_run_id)
