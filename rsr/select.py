"""Selection policies: which scored trajectories go into a student's SFT dataset (lower RSR is better).

``rsr.store.queries.candidates`` reads the views once; ``select(candidates, policy)`` and
``rank_teachers(candidates)`` are pure, so policies are tested (and compared) without a database.

A trajectory whose RSR is None or NaN (no tokens, or a response the student predicts perfectly) is never
selected by any policy, and is left out of the teacher ranking. A truncated trajectory (scored on its first
``max_tokens`` tokens only) competes only if the policy says ``include_truncated``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from rsr.metric import dataset_rsr_of_means
from rsr.store.queries import Candidate


class SelectionPolicy(BaseModel):
    """per_problem_min_rsr: per problem, the lowest-RSR trajectory (ties: smallest trajectory_id).
    top_teachers: every trajectory of the k teachers with the lowest dataset RSR.
    rsr_threshold: every trajectory with rsr <= threshold.
    Filters applied first: verified_only keeps verdict == "correct"; exclude_duplicates drops duplicates;
    include_truncated lets trajectories scored on a truncated prefix compete."""

    name: Literal["per_problem_min_rsr", "top_teachers", "rsr_threshold"]
    k: int = Field(default=1, ge=1)
    threshold: float | None = None
    verified_only: bool = True
    exclude_duplicates: bool = True
    include_truncated: bool = False

    @model_validator(mode="after")
    def _threshold_when_needed(self) -> SelectionPolicy:
        if self.name == "rsr_threshold" and (self.threshold is None or math.isnan(self.threshold)):
            raise ValueError("policy rsr_threshold needs a numeric `threshold` (select rows with rsr <= threshold)")
        return self


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# The policy's filters in the order they apply; each excludes what fails it, counted under its name.
FILTERS: tuple[tuple[str, Callable[[Candidate, SelectionPolicy], bool]], ...] = (
    ("excluded_no_rsr", lambda c, p: _finite(c.rsr)),
    ("excluded_unverified", lambda c, p: not p.verified_only or c.verdict == "correct"),
    ("excluded_duplicate", lambda c, p: not p.exclude_duplicates or not c.is_duplicate),
    ("excluded_truncated", lambda c, p: p.include_truncated or not c.truncated),
)


def sift(cands: Iterable[Candidate], policy: SelectionPolicy) -> tuple[list[Candidate], dict[str, int]]:
    """The candidates that pass the policy's filters, and how many each filter excluded."""
    pool, excluded = list(cands), {}
    for name, keep in FILTERS:
        kept = [c for c in pool if keep(c, policy)]
        excluded[name], pool = len(pool) - len(kept), kept
    return pool, excluded


def eligible(cands: Iterable[Candidate], policy: SelectionPolicy) -> list[Candidate]:
    """The policy's filters (finite RSR, verified, not duplicate, not truncated) without its choice."""
    return sift(cands, policy)[0]


def selection_counts(cands: Sequence[Candidate], chosen: Sequence[Candidate], policy: SelectionPolicy) -> dict:
    """The selection in numbers, for the card and MLflow: candidates, truncated ones, exclusions by filter, and
    what the policy chose."""
    pool, excluded = sift(cands, policy)
    return {
        "candidates": len(cands),
        "truncated": sum(c.truncated for c in cands),
        **excluded,
        "not_chosen": len(pool) - len(chosen),
        "selected": len(chosen),
        "truncated_selected": sum(c.truncated for c in chosen),
    }


def rank_teachers(cands: Iterable[Candidate]) -> list[tuple[str, float, int]]:
    """(teacher, dataset RSR, n) best first, dataset RSR as rsr.metric computes it (the paper's).

    Pass the eligible candidates (as ``select`` does) to rank teachers on what would be published. Rows without
    finite means are left out (a teacher with none is not ranked); ties are broken by teacher name."""
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        if _finite(c.mean_rank) and _finite(c.mean_surprisal):
            groups[c.teacher].append(c)
    ranked = [
        (t, float(dataset_rsr_of_means([c.mean_rank for c in g], [c.mean_surprisal for c in g])), len(g))
        for t, g in groups.items()
    ]
    return sorted(ranked, key=lambda x: (math.isnan(x[1]), x[1] if not math.isnan(x[1]) else 0.0, x[0]))


def select(cands: Sequence[Candidate], policy: SelectionPolicy) -> list[Candidate]:
    """Apply the policy; the result is sorted by (problem_id, trajectory_id) so it is reproducible."""
    pool = eligible(cands, policy)
    if policy.name == "per_problem_min_rsr":
        best: dict[str, Candidate] = {}
        for c in sorted(pool, key=lambda c: (c.rsr, c.trajectory_id)):
            best.setdefault(c.problem_id, c)  # best first: the first of each problem wins
        chosen = list(best.values())
    elif policy.name == "top_teachers":
        top = {t for t, r, _ in rank_teachers(pool)[: policy.k] if not math.isnan(r)}
        chosen = [c for c in pool if c.teacher in top]
    else:  # rsr_threshold (the validator guarantees a threshold)
        assert policy.threshold is not None
        chosen = [c for c in pool if c.rsr <= policy.threshold]
    return sorted(chosen, key=lambda c: (c.problem_id, c.trajectory_id))
