"""Selection policies: which scored trajectories go into a student's SFT dataset (lower RSR is better).

``candidates(store, student_id)`` reads the views once; ``select(candidates, policy)`` and
``rank_teachers(candidates)`` are pure, so policies are tested (and compared) without a database.

A trajectory whose RSR is None or NaN (no tokens, or a response the student predicts perfectly) is never
selected by any policy, and is left out of the teacher ranking. A truncated trajectory (scored on its first
``max_tokens`` tokens only) competes only if the policy says ``include_truncated``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, model_validator

if TYPE_CHECKING:
    from rsr.store import ScoreKey, Store


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
    truncated: bool = False


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def candidates(store: Store, student_id: str, key: ScoreKey | None = None) -> list[Candidate]:
    """Every trajectory with a current (non-error) score for this student made as ``key`` says (dtype, max_tokens,
    r_max), with its verdict and duplicate flag. Without ``key``: the student's only scoring setting; a student
    scored in several settings (e.g. bfloat16 and float32) needs ``key``, so scores made differently never mix."""
    if key is None:
        settings = store.score_settings(student_id)
        if not settings:
            return []
        if len(settings) > 1:
            found = "; ".join(str(s.key) for s in settings)
            raise ValueError(f"student {student_id} has scores made in several settings ({found}): pick one (key=)")
        key = settings[0].key
    _, rows = store.query(
        """SELECT l.trajectory_id, l.score_id, l.teacher, l.problem_id, l.rsr, l.mean_rank, l.mean_surprisal,
                  v.verdict, d.trajectory_id IS NOT NULL AS is_duplicate, l.truncated
           FROM latest_scores l
           LEFT JOIN trajectory_verdicts v ON v.trajectory_id = l.trajectory_id
           LEFT JOIN duplicates d ON d.trajectory_id = l.trajectory_id
           WHERE l.student_id = ? AND l.dtype = ? AND l.max_tokens IS NOT DISTINCT FROM ? AND l.r_max = ?
           ORDER BY l.trajectory_id""",
        [student_id, key.dtype, key.max_tokens, key.r_max],
    )
    return [Candidate(*row) for row in rows]


def eligible(cands: Iterable[Candidate], policy: SelectionPolicy) -> list[Candidate]:
    """The policy's filters (verified, not duplicate, not truncated, finite RSR) without its choice."""
    return [
        c
        for c in cands
        if _finite(c.rsr)
        and (not policy.verified_only or c.verdict == "correct")
        and (not policy.exclude_duplicates or not c.is_duplicate)
        and (policy.include_truncated or not c.truncated)
    ]


def rank_teachers(cands: Iterable[Candidate]) -> list[tuple[str, float, int]]:
    """(teacher, dataset RSR, n) best first, dataset RSR as rsr.metric computes it (the paper's).

    Pass the eligible candidates (as ``select`` does) to rank teachers on what would be published. Rows without
    finite means are left out (a teacher with none is not ranked); ties are broken by teacher name."""
    from rsr.metric import dataset_rsr_of_means  # here: rsr.config imports this module, torch stays out of it

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
