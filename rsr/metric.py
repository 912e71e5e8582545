"""The Rank-Surprisal Ratio (arXiv 2601.14249), exactly as the paper defines it.

Per response token k, under the student:
    surprisal_k = logsumexp(logits) - logit[target]            (natural log)
    rank_k      = 1 + #{v : logit_v > logit[target]}           (strictly greater; 1 = top token)
    RSR(trajectory) = sum_k min(rank_k, r_max) / sum_k surprisal_k      (lower is better)
    RSR(dataset)    = sum_j mean_rank_j / sum_j mean_surprisal_j

Sums are kept (not only ratios) so dataset figures can be recomputed in SQL. numpy only: per-token ranks and
surprisals come from the scorer (rsr/score/student.py), so the store, `rsr sql` and ingest never load torch.

Companion metrics from the same forward pass, under the same exactness rules (float32 from the final hidden
state), so that other student-relative metrics are compared with RSR on the same data:
    mean_entropy = mean_k H_k, H_k = -sum_v p_v log p_v      (the student's full-vocabulary entropy, nats)
    top1_share   = #{k : rank_k = 1} / n                     (the teacher's token is the student's top-1)
    mean_surprisal (GRAPE-style) is the one RSR already keeps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

METRIC_VERSION = "rsr-v1"
R_MAX = 100


@dataclass(frozen=True)
class TrajectoryStats:
    """Sufficient statistics of one scored trajectory (sums, so that means and ratios can be recomputed)."""

    n_tokens: int
    sum_rank: float  # sum of min(rank, r_max)
    sum_surprisal: float
    sum_rank_unclipped: float
    truncated: bool = False
    r_max: int = R_MAX
    sum_entropy: float | None = None  # None: not computed (a score made before it was stored)
    n_top1: int | None = None  # tokens of rank 1

    @classmethod
    def from_tokens(
        cls,
        ranks: ArrayLike,
        surprisals: ArrayLike,
        r_max: int = R_MAX,
        truncated: bool = False,
        entropies: ArrayLike | None = None,
    ) -> TrajectoryStats:
        ranks = np.asarray(ranks, dtype=np.float64)
        return cls(
            n_tokens=int(ranks.size),
            sum_rank=float(np.minimum(ranks, r_max).sum()),
            sum_surprisal=float(np.asarray(surprisals, dtype=np.float64).sum()),
            sum_rank_unclipped=float(ranks.sum()),
            truncated=truncated,
            r_max=r_max,
            sum_entropy=None if entropies is None else float(np.asarray(entropies, dtype=np.float64).sum()),
            n_top1=int((ranks == 1).sum()),
        )

    @property
    def rsr(self) -> float:
        return _ratio(self.sum_rank, self.sum_surprisal)

    @property
    def mean_rank(self) -> float:
        return _ratio(self.sum_rank, self.n_tokens)

    @property
    def mean_surprisal(self) -> float:
        return _ratio(self.sum_surprisal, self.n_tokens)

    @property
    def mean_rank_unclipped(self) -> float:
        return _ratio(self.sum_rank_unclipped, self.n_tokens)

    @property
    def mean_entropy(self) -> float | None:
        return None if self.sum_entropy is None else _ratio(self.sum_entropy, self.n_tokens)

    @property
    def top1_share(self) -> float | None:
        return None if self.n_top1 is None else _ratio(self.n_top1, self.n_tokens)

    def as_dict(self) -> dict:
        """The fields a Score stores, means and ratios included."""
        names = "n_tokens sum_rank sum_surprisal rsr mean_rank mean_surprisal mean_rank_unclipped truncated".split()
        names += "sum_entropy mean_entropy n_top1 top1_share".split()
        return {name: getattr(self, name) for name in names}


def _ratio(num: float, den: float) -> float:
    # A response the student predicts perfectly (surprisal 0) has no finite RSR; NaN keeps it out of min().
    return num / den if den > 0 else math.nan


PROFILE_BINS = 10


def surprisal_profile(surprisals: ArrayLike, bins: int = PROFILE_BINS) -> list[float]:
    """Where along a response its surprisal sits: the share of its total surprisal in each of `bins` equal slices
    of its scored tokens (token k of n falls in slice floor(k * bins / n)); empty when the total is not positive."""
    s = np.asarray(surprisals, dtype=np.float64).ravel()
    total = float(s.sum())
    if not s.size or total <= 0:
        return []
    slices = np.arange(s.size) * bins // s.size
    return (np.bincount(slices, weights=s, minlength=bins) / total).tolist()


def trajectory_rsr(ranks: ArrayLike, surprisals: ArrayLike, r_max: int = R_MAX) -> float:
    """RSR of one trajectory from its per-token ranks and surprisals: a ratio of sums."""
    return TrajectoryStats.from_tokens(ranks, surprisals, r_max).rsr


def dataset_rsr(stats: Iterable[TrajectoryStats]) -> float:
    """Dataset RSR: sum of per-trajectory mean ranks over sum of per-trajectory mean surprisals."""
    scored = [s for s in stats if s.n_tokens > 0]
    return float(dataset_rsr_of_means([s.mean_rank for s in scored], [s.mean_surprisal for s in scored]))


def dataset_rsr_of_means(mean_ranks: ArrayLike, mean_surprisals: ArrayLike) -> float | np.ndarray:
    """Dataset RSR from per-trajectory means, summed over the last axis: one number for 1-D input, one per row
    for [resamples, n] (a bootstrap draws all its resamples in one call). NaN where the surprisals sum to <= 0."""
    num = np.sum(np.asarray(mean_ranks, dtype=np.float64), axis=-1)
    den = np.sum(np.asarray(mean_surprisals, dtype=np.float64), axis=-1)
    out = np.divide(num, den, out=np.full(np.shape(num), np.nan), where=den > 0)
    return float(out) if out.ndim == 0 else out
