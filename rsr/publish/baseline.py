"""A selection and, beside it, its token-matched random baseline (`<name>-random`), published as a pair.

    publish_with_baseline(store, Pick(chosen, sources, counts), Pick(random, sources, counts), request, seed, ...)

The random pick comes from rsr.select.token_matched_random (the same eligible trajectories, the same response
tokens within 2%, seeded). Both manifests are computed first, so each card names the other's dataset id (neither
id depends on the other: Companion.identity); the selection is published, then the baseline, whose MLflow run is
created naming the selection's, and the selection's run is then tagged with the baseline's. Each is an ordinary
publication otherwise (files, MLflow run, DuckDB row; idempotent), so a re-run with the same seed changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rsr.publish import lineage
from rsr.publish.files import manifest_for, publish_manifest
from rsr.publish.lineage import Tracking
from rsr.publish.manifest import BenchmarkUse, Companion, Manifest, Publication, Request
from rsr.store.queries import Candidate, SourceFile
from rsr.store.writer import Store

SUFFIX = "-random"


@dataclass(frozen=True)
class Pick:
    """What one publication of the pair holds: its rows, their source files, its selection counts."""

    chosen: Sequence[Candidate]
    sources: Sequence[SourceFile] = ()
    counts: dict[str, int] = dataclasses.field(default_factory=dict)


def baseline_name(name: str) -> str:
    return name + SUFFIX


def publish_with_baseline(
    store: Store,
    selection: Pick,
    baseline: Pick,
    req: Request,
    seed: int,
    *,
    out_root: Path,
    tracking: Tracking,
    benchmarks: Sequence[BenchmarkUse] = (),
    include_contaminated: bool = False,
) -> Publication:
    """Publish the selection as ``req.name`` and the random pick as ``<name>-random``; returns the selection's
    Publication with the baseline's as its ``baseline``. Both were checked against the same ``benchmarks``."""
    names = {"seed": seed, "selection": req.name, "random": baseline_name(req.name)}
    req_sel = dataclasses.replace(req, companion=Companion("selection", **names))
    req_base = dataclasses.replace(req, name=names["random"], companion=Companion("baseline", **names))
    checked = (benchmarks, include_contaminated)
    m_sel = manifest_for(store, selection.chosen, req_sel, selection.sources, selection.counts, *checked)
    m_base = manifest_for(store, baseline.chosen, req_base, baseline.sources, baseline.counts, *checked)
    m_sel = _naming(m_sel, m_base.dataset_id, m_base.response_tokens)
    pub = publish_manifest(store, m_sel, out_root, tracking)
    m_base = _naming(m_base, m_sel.dataset_id, m_sel.response_tokens, pub.mlflow_run_id)
    base = publish_manifest(store, m_base, out_root, tracking)
    if pub.mlflow_run_id and base.mlflow_run_id:
        lineage.link_baseline(tracking.client(), pub.mlflow_run_id, base.mlflow_run_id)
    return dataclasses.replace(pub, baseline=base)


def _naming(m: Manifest, dataset_id: str, tokens: int, run_id: str | None = None) -> Manifest:
    """The manifest with its companion naming the other publication (what its card and params say)."""
    other = {"other_dataset_id": dataset_id, "other_tokens": tokens, "other_mlflow_run_id": run_id}
    return dataclasses.replace(m, companion=dataclasses.replace(m.companion, **other))
