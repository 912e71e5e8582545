"""Exact and near-duplicate responses among the trajectories of each problem (datasketch MinHash + LSH).

    dups = find_duplicates(trajectories)            # [Duplicate(trajectory_id, dup_of, similarity, kind)]

Trajectories are compared only within one problem_id (across teachers too). In input order, each trajectory is
either kept or marked as a duplicate of an earlier *kept* one, so `dup_of` never points at a duplicate.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
from datasketch import MinHash, MinHashLSH

from rsr.records import DupKind, Duplicate, normalize_text


class Response(Protocol):
    """What deduplication reads of a trajectory (a Trajectory, or a lighter row read back from the store)."""

    trajectory_id: str
    problem_id: str
    response: str


SEED = 1  # fixed: the same inputs always give the same duplicates
_CANDIDATE_SLACK = 0.15  # LSH recall below the threshold; the MinHash estimate then decides


_MASK32 = np.uint64(0xFFFFFFFF)
# fixed odd multipliers: shingle hash = sum(word_hash[i + j] * _MIX[j]) mod 2^64, folded to 32 bits
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93], dtype=np.uint64)


def _identity(value: int) -> int:
    return value  # shingles arrive already hashed (vectorised below), so datasketch must not hash them again


class _WordHasher:
    """Stable 64-bit word hashes (blake2b, not Python's per-process salted hash()), cached per vocabulary."""

    def __init__(self) -> None:
        self.cache: dict[str, int] = {}

    def ids(self, tokens: list[str]) -> np.ndarray:
        cache = self.cache
        for word in set(tokens).difference(cache):
            digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            cache[word] = int.from_bytes(digest, "little")
        # map over a bound dict method runs at C speed: this is the per-word hot loop
        return np.fromiter(map(cache.__getitem__, tokens), dtype=np.uint64, count=len(tokens))


def shingle_hashes(normalised: str, size: int = 5, words: _WordHasher | None = None) -> list[int]:
    """Distinct 32-bit hashes of the word `size`-grams of a normalised text (one gram when it is shorter)."""
    tokens = normalised.split()
    ids = (words or _WordHasher()).ids(tokens)
    n = max(1, len(ids) - size + 1)
    acc = np.zeros(n, dtype=np.uint64)
    for j in range(min(size, len(ids))):  # vectorised rolling combination: one numpy op per shingle position
        mult = _MIX[j % len(_MIX)] + np.uint64(2 * (j // len(_MIX)))
        acc += ids[j : j + n] * mult
    folded = (acc >> np.uint64(32)) ^ (acc & _MASK32)
    return np.unique(folded).tolist()


class _Sketcher:
    """MinHash factory sharing one set of permutations (generating them per MinHash is the slow part)."""

    def __init__(self, num_perm: int, shingle: int) -> None:
        self.num_perm, self.shingle = num_perm, shingle
        self.words = _WordHasher()
        self.scheme = "affine32"  # datasketch 2's default; named because reusing permutations requires it
        self.permutations = MinHash(num_perm=num_perm, seed=SEED, scheme=self.scheme).permutations

    def __call__(self, normalised: str) -> MinHash:
        m = MinHash(
            num_perm=self.num_perm, seed=SEED, hashfunc=_identity, permutations=self.permutations, scheme=self.scheme
        )
        m.update_batch(shingle_hashes(normalised, self.shingle, self.words))
        return m


def _lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands/rows for candidate search, tuned once (MinHashLSH's tuning integrates numerically: slow per group)."""
    candidate = max(0.05, threshold - _CANDIDATE_SLACK)
    lsh = MinHashLSH(threshold=candidate, num_perm=num_perm, weights=(0.2, 0.8))
    return lsh.b, lsh.r


def find_duplicates(
    trajectories: Iterable[Response], threshold: float = 0.9, num_perm: int = 128, shingle: int = 5
) -> list[Duplicate]:
    """Exact (same normalised response) and near (estimated Jaccard >= threshold) duplicates per problem_id."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    groups: dict[str, list[Response]] = defaultdict(list)
    for traj in trajectories:
        groups[traj.problem_id].append(traj)
    sketch = _Sketcher(num_perm, shingle)
    params = _lsh_params(threshold, num_perm)
    out: list[Duplicate] = []
    for members in groups.values():
        if len(members) > 1:  # a problem answered once has nothing to compare (no sketch needed)
            out.extend(_group_duplicates(members, sketch, params, threshold))
    return out


def _group_duplicates(
    members: Sequence[Response], sketch: _Sketcher, params: tuple[int, int], threshold: float
) -> list[Duplicate]:
    out: list[Duplicate] = []
    # what the first occurrence of each normalised text became; later copies inherit it:
    # kept -> (its id, 1.0, "exact") for the copies; near duplicate of K -> (K, similarity, "near")
    by_text: dict[str, tuple[str, float, DupKind]] = {}
    kept: dict[str, tuple[int, MinHash]] = {}  # kept id -> (rank in input order, sketch)
    lsh: MinHashLSH | None = None
    seen_ids: set[str] = set()
    for traj in members:
        if traj.trajectory_id in seen_ids:
            continue  # the same trajectory listed twice is not a duplicate of itself
        seen_ids.add(traj.trajectory_id)
        key = normalize_text(traj.response)
        if key in by_text:
            dup_of, sim, kind = by_text[key]
            out.append(Duplicate(trajectory_id=traj.trajectory_id, dup_of=dup_of, similarity=sim, kind=kind))
            continue
        mh = sketch(key)
        best: tuple[int, str, float] | None = None  # (rank, id, similarity) of the earliest kept match
        for cand in lsh.query(mh) if lsh is not None else ():
            rank, other = kept[cand]
            sim = float(other.jaccard(mh))
            if sim >= threshold and (best is None or rank < best[0]):
                best = (rank, cand, sim)
        if best is not None:
            by_text[key] = (best[1], best[2], "near")
            out.append(Duplicate(trajectory_id=traj.trajectory_id, dup_of=best[1], similarity=best[2], kind="near"))
            continue
        by_text[key] = (traj.trajectory_id, 1.0, "exact")
        if lsh is None:
            lsh = MinHashLSH(num_perm=sketch.num_perm, params=params)
        lsh.insert(traj.trajectory_id, mh)
        kept[traj.trajectory_id] = (len(kept), mh)
    return out
