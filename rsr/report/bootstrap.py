"""How sure the teacher board is: a 95% interval per teacher, and whether each adjacent pair's order is settled.

Every bootstrap here is seeded from the names it concerns (never from a position or the clock), and reads its
rows in a fixed order (`Reader.used_scores` sorts them), so the same store prints the same numbers every time.

- ``intervals``: per teacher, the 95% percentile interval of its dataset RSR, resampling its trajectories.
- ``order_shares``: for each teacher on the board and the one after it, the share of resamples of *problems*
  (the same draw for both: a paired bootstrap) in which the first's dataset RSR is still below the second's; the
  order is settled when that holds in at least SETTLED of them.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from rsr.metric import dataset_rsr_of_means

N_RESAMPLES = 1000
SEED = 0
SETTLED = 0.95  # an adjacent pair's order is settled when it holds in this share of the resamples
_CELLS = 4_000_000  # indices drawn at once: bounded memory for a teacher with 250k trajectories


def _seed(*names: object) -> list[int]:
    return [SEED, *(zlib.crc32(str(n).encode()) for n in names)]


def bootstrap_ci(
    mean_ranks: np.ndarray, mean_surprisals: np.ndarray, seed: int | list[int] = SEED, n: int = N_RESAMPLES
) -> tuple[float, float]:
    """95% percentile interval of the dataset RSR, resampling trajectories with replacement ``n`` times."""
    size = len(mean_ranks)
    if size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS // size)  # resamples per draw
    values = []
    for start in range(0, n, chunk):
        idx = rng.integers(0, size, size=(min(chunk, n - start), size))
        values.append(dataset_rsr_of_means(mean_ranks[idx], mean_surprisals[idx]))
    low, high = np.nanpercentile(np.concatenate(values), [2.5, 97.5])
    return float(low), float(high)


def intervals(used: pd.DataFrame) -> pd.DataFrame:
    """teacher, ci_low, ci_high from the rows the board uses (teacher, mean_rank, mean_surprisal, in a fixed order)."""
    rows = []
    for teacher, g in used.groupby("teacher", sort=True):
        # Seeded per teacher (not by position): a teacher's interval does not move when another is added.
        ci = bootstrap_ci(g["mean_rank"].to_numpy(), g["mean_surprisal"].to_numpy(), _seed(teacher))
        rows.append((teacher, *ci))
    return pd.DataFrame(rows, columns=["teacher", "ci_low", "ci_high"])


def order_share(first: pd.DataFrame, second: pd.DataFrame, seed: list[int], n: int = N_RESAMPLES) -> float:
    """The share of ``n`` resamples of the two teachers' problems (with replacement; each teacher keeps its own rows
    on the problems drawn) in which ``first``'s dataset RSR is below ``second``'s. A resample in which either has
    no row does not count as holding."""
    problems = np.union1d(first["problem_id"].to_numpy(), second["problem_id"].to_numpy())
    size = len(problems)
    if size == 0:
        return math.nan

    def per_problem(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        at = np.searchsorted(problems, rows["problem_id"].to_numpy())
        ranks = np.bincount(at, weights=rows["mean_rank"].to_numpy(dtype=float), minlength=size)
        return ranks, np.bincount(at, weights=rows["mean_surprisal"].to_numpy(dtype=float), minlength=size)

    (r1, s1), (r2, s2) = per_problem(first), per_problem(second)
    rng = np.random.default_rng(seed)
    chunk, holds = max(1, _CELLS // size), 0
    with np.errstate(invalid="ignore", divide="ignore"):
        for start in range(0, n, chunk):
            idx = rng.integers(0, size, size=(min(chunk, n - start), size))
            a = r1[idx].sum(axis=1) / s1[idx].sum(axis=1)
            b = r2[idx].sum(axis=1) / s2[idx].sum(axis=1)
            holds += int(np.sum(a < b))  # NaN (no row drawn) compares False
    return holds / n


def order_shares(used: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """teacher, ahead_share, settled: for each teacher of ``order`` (the board, best first) but the last, how often
    its place above the next one holds (order_share) and whether that is settled (>= SETTLED)."""
    by_teacher = {t: g for t, g in used.groupby("teacher", sort=False)}
    rows = []
    for first, second in zip(order, order[1:], strict=False):
        if first in by_teacher and second in by_teacher:
            share = order_share(by_teacher[first], by_teacher[second], _seed(first, second))
            rows.append((first, share, share >= SETTLED))
    return pd.DataFrame(rows, columns=["teacher", "ahead_share", "settled"])
