"""Dedup: exact and near duplicates per problem, thresholds, dup_of semantics, determinism, large groups, real data."""

from __future__ import annotations

import random

import pytest

from rsr.curate.dedup import find_duplicates
from rsr.curate.ingest import ingest_file
from rsr.records import Message, Trajectory


def traj(teacher: str, response: str, problem: str = "Compute the sum.") -> Trajectory:
    return Trajectory.build(
        teacher=teacher,
        problem=problem,
        messages=[Message(role="user", content=problem), Message(role="assistant", content=response)],
        source_file="mem",
        source_line=0,
    )


def essay(seed: int, n: int = 300) -> list[str]:
    rng = random.Random(seed)
    return [f"w{rng.randrange(5000)}" for _ in range(n)]


def test_exact_duplicates_within_and_across_teachers():
    text = " ".join(essay(1))
    a = traj("t1", text)
    b = traj("t2", "  " + text.upper().replace(" ", "\n"))  # same under normalisation (case, whitespace)
    c = traj("t1", text + " ")  # same teacher, differs only in trailing space: another id, same text
    other_problem = traj("t3", text, problem="A different problem.")
    dups = find_duplicates([a, b, c, other_problem])
    assert {(d.trajectory_id, d.dup_of, d.kind, d.similarity) for d in dups} == {
        (b.trajectory_id, a.trajectory_id, "exact", 1.0),
        (c.trajectory_id, a.trajectory_id, "exact", 1.0),
    }


def test_near_duplicates_and_threshold():
    words = essay(2)
    edited = list(words)
    edited[150] = "changed"  # one word in 300: ~5 of 296 shingles differ -> Jaccard ~0.97
    far = essay(3)
    a, b, c = traj("t1", " ".join(words)), traj("t2", " ".join(edited)), traj("t3", " ".join(far))
    (dup,) = find_duplicates([a, b, c])
    assert (dup.trajectory_id, dup.dup_of, dup.kind) == (b.trajectory_id, a.trajectory_id, "near")
    assert 0.9 <= dup.similarity < 1.0
    assert find_duplicates([a, b, c], threshold=0.995) == []  # stricter than their similarity: kept apart
    assert find_duplicates([a, c], threshold=0.3) == []  # unrelated texts never meet


def test_dup_of_is_the_first_kept_and_never_itself_marked():
    words = essay(4)
    variants = []
    for k in range(4):  # each differs from the first by one word: all near the first
        v = list(words)
        v[20 + 50 * k] = f"x{k}"
        variants.append(" ".join(v))
    items = [traj("t0", " ".join(words))] + [traj(f"t{k + 1}", v) for k, v in enumerate(variants)]
    items.append(traj("t9", variants[1]))  # exact copy of a near duplicate: follows it to the kept first
    dups = find_duplicates(items)
    marked = {d.trajectory_id for d in dups}
    assert marked == {t.trajectory_id for t in items[1:]}
    assert {d.dup_of for d in dups} == {items[0].trajectory_id}
    last = next(d for d in dups if d.trajectory_id == items[-1].trajectory_id)
    twin = next(d for d in dups if d.trajectory_id == items[2].trajectory_id)
    assert (last.kind, last.similarity) == ("near", twin.similarity)


def test_short_and_empty_responses():
    a, b, c = traj("t1", "42"), traj("t2", "42"), traj("t3", "43")
    dups = find_duplicates([a, b, c])
    assert [(d.trajectory_id, d.kind) for d in dups] == [(b.trajectory_id, "exact")]


def test_deterministic_and_validated():
    items = [traj(f"t{i}", " ".join(essay(i % 3))) for i in range(9)]
    assert find_duplicates(items) == find_duplicates(list(items))
    with pytest.raises(ValueError, match="threshold"):
        find_duplicates(items, threshold=0)


def test_large_groups_search_through_lsh():
    """Past a few hundred kept responses per problem, candidates come from LSH: the same findings."""
    essays = [essay(100 + i) for i in range(400)]
    edited = list(essays[300])
    edited[150] = "changed"
    items = [traj(f"t{i}", " ".join(e)) for i, e in enumerate(essays)] + [traj("late", " ".join(edited))]
    (dup,) = find_duplicates(items)
    assert (dup.trajectory_id, dup.dup_of, dup.kind) == (items[-1].trajectory_id, items[300].trajectory_id, "near")


def test_real_data_and_copies(shared_data):
    folder = shared_data / "zeroeval-math-l5"
    trajectories = []
    for path in sorted(p for p in folder.glob("*.json") if p.name != "summary.json"):
        trajectories += ingest_file(path).trajectories
    assert len(trajectories) == 5768
    dups = find_duplicates(trajectories)
    assert len(dups) < 50  # eight different teachers rarely write the same text
    # the same teacher file ingested under a second name: every copy is an exact duplicate of the original
    gpt = [t for t in trajectories if t.teacher == "gpt-4o-2024-08-06"]
    copies = [t.model_copy(update={"teacher": "copy", "trajectory_id": "c" + t.trajectory_id}) for t in gpt]
    exact = {d.trajectory_id: d for d in find_duplicates(gpt + copies) if d.kind == "exact"}
    assert len(exact) == len(copies)
    assert all(exact["c" + t.trajectory_id].dup_of == t.trajectory_id for t in gpt)


def test_minhash_of_a_long_trace_is_hashed_in_blocks_with_the_same_signature(monkeypatch):
    """A long trace's shingles are hashed a block at a time (bounded memory, linear time): the signature is the
    one of hashing them all at once."""
    from rsr.curate import dedup

    rng = random.Random(7)
    text = " ".join(f"w{rng.randrange(10**6)}" for _ in range(20_000))
    sketch = dedup._Sketcher(128, 5)
    whole = sketch(text)
    monkeypatch.setattr(dedup, "_BLOCK", 1000)
    assert (sketch(text) == whole).all() and len(sketch.shingles(text)) > 10 * 1000
