"""Exact and near-duplicate responses among the trajectories of each problem (MinHash; datasketch's LSH for big groups).

    dups = find_duplicates(trajectories)            # [Duplicate(trajectory_id, dup_of, similarity, kind)]

Trajectories are compared only within one problem_id (across teachers too). In input order, each trajectory is
either kept or marked as a duplicate of an earlier *kept* one, so `dup_of` never points at a duplicate.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rsr.records import DupKind, Duplicate, normalize_text

if TYPE_CHECKING:
    from datasketch import MinHash, MinHashLSH

SEED = 1  # fixed: the same inputs always give the same duplicates
_CANDIDATE_SLACK = 0.15  # LSH recall below the threshold; the MinHash estimate then decides
_BLOCK = 8192  # shingles hashed at once (x num_perm x 8 bytes: 8 MB)
_PAIRWISE_MAX = 256  # kept responses per problem compared all at once; past this, LSH finds the candidates
_PRIME = np.uint64((1 << 61) - 1)  # datasketch's Mersenne prime
_MASK32 = np.uint64(0xFFFFFFFF)
# fixed odd multipliers: shingle hash = sum(word_hash[i + j] * _MIX[j]) mod 2^64, folded to 32 bits
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93], dtype=np.uint64)

DEFAULT_THRESHOLD = 0.9  # estimated Jaccard similarity of word 5-shingles at or above which two responses are one


class _Sketcher:
    """MinHash signatures as numpy arrays: datasketch's own permutations (scheme "legacy") applied to all
    shingles in one matrix operation, rather than a Python call per shingle inside MinHash.update_batch."""

    def __init__(self, num_perm: int, shingle: int) -> None:
        self.num_perm, self.shingle = num_perm, shingle
        self.words: dict[str, int] = {}  # stable 64-bit word hashes (blake2b, not the per-process salted hash())
        from datasketch import MinHash  # here: it pulls in scipy and redis (~45 MB), which ingest never needs

        a, b = MinHash(num_perm=num_perm, seed=SEED, scheme="legacy").permutations
        self.a, self.b = a.astype(np.uint64), b.astype(np.uint64)

    def shingles(self, normalised: str) -> np.ndarray:
        """Distinct 32-bit hashes (as uint64) of the word n-grams of a normalised text (one gram when shorter)."""
        tokens, words, size = normalised.split(), self.words, self.shingle
        for word in set(tokens).difference(words):
            digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            words[word] = int.from_bytes(digest, "little")
        # map over a bound dict method runs at C speed: this is the per-word hot loop
        ids = np.fromiter(map(words.__getitem__, tokens), dtype=np.uint64, count=len(tokens))
        n = max(1, len(ids) - size + 1)
        acc = np.zeros(n, dtype=np.uint64)
        for j in range(min(size, len(ids))):  # vectorised rolling combination: one numpy op per shingle position
            mult = _MIX[j % len(_MIX)] + np.uint64(2 * (j // len(_MIX)))
            acc += ids[j : j + n] * mult
        return np.unique((acc >> np.uint64(32)) ^ (acc & _MASK32))

    def __call__(self, normalised: str) -> np.ndarray:
        # the legacy scheme's arithmetic: products wrap at 2^64, then mod the Mersenne prime, 32 bits kept;
        # in place on a (shingles x num_perm) matrix, since temporaries doubled the time; _BLOCK shingles at a
        # time, so memory stays ~8 MB and time linear in the text (a 60 KB trace: ~10k shingles, 2 blocks; an 8 MB
        # one: ~1.3M shingles, not a 1.3 GB matrix)
        shingles, out = self.shingles(normalised), np.full(self.num_perm, _MASK32, dtype=np.uint64)
        for start in range(0, len(shingles), _BLOCK):
            x = shingles[start : start + _BLOCK, None] * self.a
            x += self.b
            np.remainder(x, _PRIME, out=x)
            x &= _MASK32
            np.minimum(out, x.min(axis=0), out=out)
        return out

    def minhash(self, signature: np.ndarray) -> MinHash:
        from datasketch import MinHash

        return MinHash(num_perm=self.num_perm, seed=SEED, hashvalues=signature, scheme="legacy")


def find_duplicates(
    trajectories: Iterable[Any], threshold: float = DEFAULT_THRESHOLD, num_perm: int = 128, shingle: int = 5
) -> list[Duplicate]:
    """Exact (same normalised response) and near (estimated Jaccard >= threshold) duplicates per problem_id, among
    trajectories (a Trajectory, or any row with its trajectory_id, problem_id and response)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    groups: dict[str, dict[str, Any]] = defaultdict(dict)  # problem -> trajectory id -> its first occurrence
    for traj in trajectories:
        groups[traj.problem_id].setdefault(traj.trajectory_id, traj)  # listed twice: not a duplicate of itself
    sketch = _Sketcher(num_perm, shingle)
    out: list[Duplicate] = []
    for members in groups.values():
        if len(members) > 1:  # a problem answered once has nothing to compare (no sketch needed)
            out.extend(_group_duplicates(list(members.values()), sketch, threshold))
    return out


class _Kept:
    """The kept responses of one problem, searched for the earliest one at least `threshold` similar:
    all of them while few, through MinHash-LSH candidates once many."""

    def __init__(self, sketch: _Sketcher, threshold: float) -> None:
        self.sketch, self.threshold = sketch, threshold
        self.ids: list[str] = []
        self.signatures: list[np.ndarray] = []
        self.lsh: MinHashLSH | None = None  # keyed by rank: the order responses were kept in

    def earliest_match(self, signature: np.ndarray) -> tuple[str, float] | None:
        ranks = range(len(self.ids)) if self.lsh is None else sorted(self.lsh.query(self.sketch.minhash(signature)))
        for rank in ranks:
            similarity = float(np.mean(self.signatures[rank] == signature))
            if similarity >= self.threshold:
                return self.ids[rank], similarity
        return None

    def add(self, trajectory_id: str, signature: np.ndarray) -> None:
        self.ids.append(trajectory_id)
        self.signatures.append(signature)
        if self.lsh is None and len(self.ids) > _PAIRWISE_MAX:
            candidate = max(0.05, self.threshold - _CANDIDATE_SLACK)
            from datasketch import MinHashLSH

            self.lsh = MinHashLSH(threshold=candidate, num_perm=self.sketch.num_perm, weights=(0.2, 0.8))
            for rank, kept in enumerate(self.signatures):
                self.lsh.insert(rank, self.sketch.minhash(kept))
        elif self.lsh is not None:
            self.lsh.insert(len(self.ids) - 1, self.sketch.minhash(signature))


def _group_duplicates(members: Sequence[Any], sketch: _Sketcher, threshold: float) -> list[Duplicate]:
    out: list[Duplicate] = []
    # what the first occurrence of each normalised text became; later copies inherit it:
    # kept -> (its id, 1.0, "exact") for the copies; near duplicate of K -> (K, similarity, "near")
    by_text: dict[str, tuple[str, float, DupKind]] = {}
    kept = _Kept(sketch, threshold)
    for traj in members:
        key = normalize_text(traj.response)
        if key not in by_text:
            signature = sketch(key)
            if (match := kept.earliest_match(signature)) is None:
                by_text[key] = (traj.trajectory_id, 1.0, "exact")
                kept.add(traj.trajectory_id, signature)
                continue
            by_text[key] = (*match, "near")
        dup_of, similarity, kind = by_text[key]
        out.append(Duplicate(trajectory_id=traj.trajectory_id, dup_of=dup_of, similarity=similarity, kind=kind))
    return out
