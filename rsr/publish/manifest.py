"""What one publication is, as pure data: the request, the manifest computed before anything is written, the result.
card.py, lineage.py and files.py all read it; it imports none of them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from rsr.metric import dataset_rsr_of_means
from rsr.select import SelectionPolicy
from rsr.store.queries import SourceFile

DIGEST_LEN = 20  # hex chars of a digest logged to MLflow (its dataset digest column holds 36)


@dataclass(frozen=True)
class Publication:
    dataset_id: str
    path: Path
    n_rows: int
    content_digest: str
    mlflow_run_id: str | None
    baseline: Publication | None = None  # its token-matched random baseline, when one was published beside it


@dataclass(frozen=True)
class Companion:
    """A selection and its token-matched random baseline (`<name>-random`, rsr.select.token_matched_random): each
    names the other in its card, its params in DuckDB and its MLflow run. ``role`` is what this publication is."""

    role: Literal["selection", "baseline"]
    seed: int
    selection: str  # the selection's name
    random: str  # the baseline's name
    other_dataset_id: str = ""  # set once both manifests exist (their ids do not depend on each other)
    other_tokens: int = 0  # the other publication's response tokens
    other_mlflow_run_id: str | None = None  # the baseline knows the selection's run (published first)

    def identity(self) -> list:
        """What a publication's id adds for it: a selection published with a baseline is another publication than
        the same rows without one (its card names the baseline), and a baseline is one per seed and selection."""
        return [self.role, "random", self.seed, self.selection, self.random]


@dataclass(frozen=True)
class BenchmarkUse:
    """A benchmark every trajectory was checked against, and how many trajectories (of every teacher) hold one of
    its problems: left out of scoring and selection, unless the publication includes contaminated ones."""

    name: str
    source: str
    kind: str  # file | hf_dir | hub
    revision: str | None
    digest: str  # sha256 of its problems
    n_problems: int
    ngram: int
    removed: int


@dataclass(frozen=True)
class Request:
    """What is published, for whom, by which run."""

    name: str
    student_id: str
    student_ref: str
    policy: SelectionPolicy
    run_id: str
    prefect_flow_run_id: str | None = None
    # How the student rendered what was scored (Student.info()): the card says how to train so training sees it.
    render_mode: str = "template"
    render_note: str | None = None
    chat_template: str | None = None  # the template asked for (a name or file); None: the model's own
    companion: Companion | None = None  # a selection with its random baseline, or the baseline itself
    end_of_turn: str | None = None  # what ends an assistant turn under the student's template (trained, not scored)
    # (messages, tools) -> the student's columns: its own form of messages, or the prompt/completion text scored
    split: Callable[[list[dict], list[dict] | None], dict[str, Any]] | None = field(
        default=None, compare=False, repr=False
    )


def rsr_stats(rows: pd.DataFrame) -> dict[str, float]:
    """Row count, RSR mean/median/min/max and dataset RSR (over the rows with both means) of published rows."""
    usable = rows.dropna(subset=["mean_rank", "mean_surprisal"])
    drsr = dataset_rsr_of_means(usable["mean_rank"], usable["mean_surprisal"])
    return {
        "n_rows": len(rows),
        **rows["rsr"].agg(["mean", "median", "min", "max"]).add_prefix("rsr_"),
        "dataset_rsr": drsr,
    }


@dataclass(frozen=True, kw_only=True)
class Manifest(Request):
    """The request and everything its publication says about itself, computed before anything is written."""

    rows: list[dict[str, Any]]
    content_digest: str
    dataset_id: str
    sources: list[SourceFile]
    stats: dict[str, float]  # rsr_stats of all rows
    teachers: dict[str, dict[str, float]]  # rsr_stats per teacher, sorted by name
    n_problems: int
    counts: dict[str, int] = field(default_factory=dict)  # the selection in numbers (selection_counts)
    response_tokens: int = 0  # the rows' scored response tokens (what a token-matched baseline matches)
    benchmarks: list[BenchmarkUse] = field(default_factory=list)  # what the trajectories were checked against
    include_contaminated: bool = False  # trajectories holding a benchmark problem were let in


def content_digest(rows: Sequence[dict[str, Any]]) -> str:
    """Digest of the rows as canonical JSON lines (keys sorted); rows must already be in canonical order."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, ensure_ascii=False, sort_keys=True).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()[:DIGEST_LEN]


def dataset_id_for(
    name: str,
    student_id: str,
    policy: SelectionPolicy,
    digest: str,
    companion: Companion | None = None,
    checked: Sequence[str] = (),
    flagged: bool = False,
) -> str:
    """The publication's id. `companion`: a selection with its random baseline, or the baseline itself;
    `checked`: the benchmarks (name@digest) its trajectories were checked against, and `flagged`: contaminated
    ones let in; each counts only when given, so a publication without them keeps the id it had before."""
    parts = [name, student_id, policy.identity(), digest, *([companion.identity()] if companion else [])]
    parts += [sorted(checked), flagged] if checked or flagged else []
    key = json.dumps(parts, sort_keys=True)
    return "d-" + hashlib.sha256(key.encode()).hexdigest()[:DIGEST_LEN]
