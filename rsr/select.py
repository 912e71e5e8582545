"""Selection policies: which scored trajectories go into a student's SFT dataset (lower RSR is better).

``candidates(store, student_id)`` reads the views once; ``select(candidates, policy)`` and
``rank_teachers(candidates)`` are pure, so policies are tested (and compared) without a database.

A trajectory whose RSR is None or NaN (no tokens, or a response the student predicts perfectly) is never
selected by any policy, and is left out of the teacher ranking.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, model_validator

if TYPE_CHECKING:
    from rsr.store import Store

PolicyName = Literal["per_problem_min_rsr", "top_teachers", "rsr_threshold"]


class SelectionPolicy(BaseModel):
    """per_problem_min_rsr: per problem, the lowest-RSR trajectory (ties: smallest trajectory_id).
    top_teachers: every trajectory of the k teachers with the lowest dataset RSR.
    rsr_threshold: every trajectory with rsr <= threshold.
    Filters applied first: verified_only keeps verdict == "correct"; exclude_duplicates drops duplicates."""

    name: PolicyName
    k: int = Field(default=1, ge=1)
    threshold: float | None = None
    verified_only: bool = True
    exclude_duplicates: bool = True

    @model_validator(mode="after")
    def _threshold_when_needed(self) -> SelectionPolicy:
        if self.name == "rsr_threshold" and (self.threshold is None or math.isnan(self.threshold)):
            raise ValueError("policy rsr_threshold needs a numeric `threshold` (select rows with rsr <= threshold)")
        return self


@dataclass(frozen=True)
class Candidate:
    trajectory_id: str
    score_id: str
    teacher: str
    problem_id: str
    rsr: float | None
    mean_rank: float | None
    mean_surprisal: float | None
    verdict: str | None
    is_duplicate: bool


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def candidates(store: Store, student_id: str) -> list[Candidate]:
    """Every trajectory with a current (latest, non-error) score for this student, with verdict and dup flag."""
    _, rows = store.query(
        """SELECT l.trajectory_id, l.score_id, l.teacher, l.problem_id, l.rsr, l.mean_rank, l.mean_surprisal,
                  v.verdict, d.trajectory_id IS NOT NULL AS is_duplicate
           FROM latest_scores l
           LEFT JOIN trajectory_verdicts v ON v.trajectory_id = l.trajectory_id
           LEFT JOIN duplicates d ON d.trajectory_id = l.trajectory_id
           WHERE l.student_id = ?
           ORDER BY l.trajectory_id""",
        [student_id],
    )
    return [Candidate(*row) for row in rows]


def eligible(cands: Iterable[Candidate], policy: SelectionPolicy) -> list[Candidate]:
    """The policy's filters (verified, not duplicate, finite RSR) without its choice."""
    return [
        c
        for c in cands
        if _finite(c.rsr)
        and (not policy.verified_only or c.verdict == "correct")
        and (not policy.exclude_duplicates or not c.is_duplicate)
    ]


def rank_teachers(cands: Iterable[Candidate]) -> list[tuple[str, float, int]]:
    """(teacher, dataset RSR, n) best first; dataset RSR = sum mean_rank / sum mean_surprisal (the paper's).

    Pass the eligible candidates (as ``select`` does) to rank teachers on what would be published.
    Ties are broken by teacher name; a teacher with no usable rows (NaN dataset RSR) sorts last.
    """
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for c in cands:
        if _finite(c.mean_rank) and _finite(c.mean_surprisal):
            acc = sums[c.teacher]
            acc[0] += c.mean_rank
            acc[1] += c.mean_surprisal
            acc[2] += 1
    ranked = [(t, r / s if s > 0 else math.nan, int(n)) for t, (r, s, n) in sums.items()]
    return sorted(ranked, key=lambda x: (math.isnan(x[1]), x[1] if not math.isnan(x[1]) else 0.0, x[0]))


def select(cands: Sequence[Candidate], policy: SelectionPolicy) -> list[Candidate]:
    """Apply the policy; the result is sorted by (problem_id, trajectory_id) so it is reproducible."""
    pool = eligible(cands, policy)
    if policy.name == "per_problem_min_rsr":
        best: dict[str, Candidate] = {}
        for c in pool:
            cur = best.get(c.problem_id)
            if cur is None or (c.rsr, c.trajectory_id) < (cur.rsr, cur.trajectory_id):
                best[c.problem_id] = c
        chosen = list(best.values())
    elif policy.name == "top_teachers":
        top = {t for t, r, _ in rank_teachers(pool)[: policy.k] if not math.isnan(r)}
        chosen = [c for c in pool if c.teacher in top]
    else:  # rsr_threshold (the validator guarantees a threshold)
        assert policy.threshold is not None
        chosen = [c for c in pool if c.rsr <= policy.threshold]
    return sorted(chosen, key=lambda c: (c.problem_id, c.trajectory_id))
