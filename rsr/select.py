"""Selection policies: which scored trajectories go into a student's SFT dataset (lower RSR is better).

``rsr.store.queries.candidates`` reads the views once; ``select(candidates, policy)`` and
``rank_teachers(candidates)`` are pure, so policies are tested (and compared) without a database.

A trajectory whose RSR is None or NaN (no tokens, or a response the student predicts perfectly) is never
selected by any policy, and is left out of the teacher ranking. A truncated trajectory (scored on its first
``max_tokens`` tokens only) competes only if the policy says ``include_truncated``.

For ablations a policy may rank by another stored metric (``metric``: mean surprisal, mean entropy, length), lowest
first as RSR, over the same eligible trajectories. Beside a selection, ``token_matched_random`` draws the baseline a
team compares it with: a seeded random pick from the same eligible trajectories holding the same response tokens
(within ``TOKEN_TOLERANCE``), so that a gain is not only "the shorter responses".
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from rsr.metric import dataset_rsr_of_means
from rsr.store.queries import Candidate

Metric = Literal["rsr", "mean_surprisal", "mean_entropy", "length"]
# What each metric reads off a candidate; every one ranks lowest first. length: scored response tokens.
METRICS: dict[str, Callable[[Candidate], float | None]] = {
    "rsr": lambda c: c.rsr,
    "mean_surprisal": lambda c: c.mean_surprisal,
    "mean_entropy": lambda c: c.mean_entropy,
    "length": lambda c: float(c.n_tokens) if c.n_tokens else None,
}


class SelectionPolicy(BaseModel):
    """per_problem_min_rsr: per problem, the trajectory lowest by `metric` (ties: smallest trajectory_id).
    top_teachers: every trajectory of the k teachers lowest by `metric` (RSR: dataset RSR; another metric: its mean).
    rsr_threshold: every trajectory whose `metric` is <= threshold.
    metric: rsr (the paper's, the default), or for ablations mean_surprisal (GRAPE-style), mean_entropy or length.
    Filters applied first: verified_only keeps verdict == "correct"; exclude_duplicates drops duplicates;
    include_truncated lets trajectories scored on a truncated prefix compete."""

    name: Literal["per_problem_min_rsr", "top_teachers", "rsr_threshold"]
    k: int = Field(default=1, ge=1)
    threshold: float | None = None
    verified_only: bool = True
    exclude_duplicates: bool = True
    include_truncated: bool = False
    metric: Metric = "rsr"

    @model_validator(mode="after")
    def _threshold_when_needed(self) -> SelectionPolicy:
        if self.name == "rsr_threshold" and (self.threshold is None or math.isnan(self.threshold)):
            raise ValueError(
                f"policy rsr_threshold needs a numeric `threshold` (select rows with {self.metric} <= threshold)"
            )
        return self

    def identity(self) -> dict:
        """The policy as its publications' ids hash it: the default metric left out, so that a selection by RSR
        keeps the id it had before policies named a metric."""
        return self.model_dump(mode="json", exclude={"metric"} if self.metric == "rsr" else set())


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def metric_of(c: Candidate, metric: str) -> float | None:
    return METRICS[metric](c)


# The policy's filters in the order they apply; each excludes what fails it, counted under its name.
FILTERS: tuple[tuple[str, Callable[[Candidate, SelectionPolicy], bool]], ...] = (
    ("excluded_no_rsr", lambda c, p: _finite(c.rsr)),
    ("excluded_unverified", lambda c, p: not p.verified_only or c.verdict == "correct"),
    ("excluded_duplicate", lambda c, p: not p.exclude_duplicates or not c.is_duplicate),
    ("excluded_truncated", lambda c, p: p.include_truncated or not c.truncated),
    # Ranking by another metric: rows scored before it was stored have none (`rsr add-student --fill-metrics`).
    ("excluded_no_metric", lambda c, p: _finite(metric_of(c, p.metric))),
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


def rank_teachers(cands: Iterable[Candidate], metric: str = "rsr") -> list[tuple[str, float, int]]:
    """(teacher, value, n) best first. RSR: the dataset RSR as rsr.metric computes it (the paper's); another
    metric: its mean over the teacher's trajectories.

    Pass the eligible candidates (as ``select`` does) to rank teachers on what would be published. Rows without
    finite values are left out (a teacher with none is not ranked); ties are broken by teacher name."""
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        values = (c.mean_rank, c.mean_surprisal) if metric == "rsr" else (metric_of(c, metric),)
        if all(map(_finite, values)):
            groups[c.teacher].append(c)
    ranked = [(t, _teacher_value(g, metric), len(g)) for t, g in groups.items()]
    return sorted(ranked, key=lambda x: (math.isnan(x[1]), x[1] if not math.isnan(x[1]) else 0.0, x[0]))


def _teacher_value(group: list[Candidate], metric: str) -> float:
    if metric == "rsr":
        return float(dataset_rsr_of_means([c.mean_rank for c in group], [c.mean_surprisal for c in group]))
    return math.fsum(metric_of(c, metric) for c in group) / len(group)


def select(cands: Sequence[Candidate], policy: SelectionPolicy) -> list[Candidate]:
    """Apply the policy; the result is sorted by (problem_id, trajectory_id) so it is reproducible."""
    pool = eligible(cands, policy)
    value = METRICS[policy.metric]
    if policy.name == "per_problem_min_rsr":
        best: dict[str, Candidate] = {}
        for c in sorted(pool, key=lambda c: (value(c), c.trajectory_id)):
            best.setdefault(c.problem_id, c)  # best first: the first of each problem wins
        chosen = list(best.values())
    elif policy.name == "top_teachers":
        top = {t for t, r, _ in rank_teachers(pool, policy.metric)[: policy.k] if not math.isnan(r)}
        chosen = [c for c in pool if c.teacher in top]
    else:  # rsr_threshold (the validator guarantees a threshold)
        assert policy.threshold is not None
        chosen = [c for c in pool if value(c) <= policy.threshold]
    return sorted(chosen, key=lambda c: (c.problem_id, c.trajectory_id))


# ---- the token-matched random baseline --------------------------------------------------------------------------

TOKEN_TOLERANCE = 0.02  # the baseline's response tokens are within 2% of the selection's


class Baseline(BaseModel):
    """What to publish beside a selection: `random`, a seeded random pick from the same eligible trajectories whose
    response tokens total within 2% of the selection's (published as `<name>-random`)."""

    kind: Literal["random"] = "random"
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _by_name(cls, value: object) -> object:
        return {"kind": value} if isinstance(value, str) else value  # `baseline: random` in a config


def _draw_order(c: Candidate, seed: int) -> str:
    # A trajectory's place in the draw: a hash of (seed, its id), so the same seed gives the same pick on any
    # machine and Python, and adding trajectories to the store never reshuffles the others.
    return hashlib.sha256(f"{seed}\x00{c.trajectory_id}".encode()).hexdigest()


def token_matched_random(
    cands: Sequence[Candidate], chosen: Sequence[Candidate], policy: SelectionPolicy, seed: int = 0
) -> list[Candidate]:
    """A seeded random pick from the policy's eligible trajectories (the selection's filters) whose response tokens
    total within TOKEN_TOLERANCE of the chosen ones'.

    Trajectories are taken in the seed's random order while they fit under the selection's total, at most one per
    problem when the selection has at most one (so where random answers are longer than the chosen ones, the pick
    covers fewer problems with the same tokens); if that falls short by more than the tolerance (random answers
    shorter than the chosen ones), more are taken in the same order, a problem's second answer too, while they fit
    under the upper bound. Raises ValueError when no such pick exists. Sorted as ``select`` sorts."""
    target = sum(c.n_tokens for c in chosen)
    if target <= 0:
        raise ValueError("the selection holds no response tokens: there is no token budget to match")
    one_each = len({c.problem_id for c in chosen}) == len(chosen)
    order = sorted(eligible(cands, policy), key=lambda c: _draw_order(c, seed))
    picked: dict[str, Candidate] = {}
    total, problems = 0, set()
    low, high = target * (1 - TOKEN_TOLERANCE), target * (1 + TOKEN_TOLERANCE)
    for limit, once in ((target, one_each), (high, False)):  # under the total first; up to +2% only when short
        for c in order:
            if limit == high and total >= low:
                break
            if c.trajectory_id in picked or (once and c.problem_id in problems) or total + c.n_tokens > limit:
                continue
            picked[c.trajectory_id] = c
            total += c.n_tokens
            problems.add(c.problem_id)
    if not low <= total <= high:
        raise ValueError(
            f"no random pick of the eligible trajectories holds {target} response tokens within "
            f"{TOKEN_TOLERANCE:.0%} (the closest: {total}): too few eligible trajectories beside the selection"
        )
    return sorted(picked.values(), key=lambda c: (c.problem_id, c.trajectory_id))
