"""rsr.select: pure policies on hand-made candidates, and candidates() read from a real store."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from rsr.metric import METRIC_VERSION
from rsr.records import Duplicate, Message, Score, Trajectory, Verdict
from rsr.select import (
    TOKEN_TOLERANCE,
    Baseline,
    SelectionPolicy,
    eligible,
    rank_teachers,
    select,
    selection_counts,
    token_matched_random,
)
from rsr.store.queries import Candidate, ScoreKey
from rsr.store.writer import Store


def cand(
    tid: str,
    teacher: str,
    problem: str,
    rsr: float | None,
    mean_rank: float | None = None,
    mean_surprisal: float | None = 1.0,
    verdict: str | None = "correct",
    dup: bool = False,
    truncated: bool = False,
    n_tokens: int = 10,
    mean_entropy: float | None = None,
) -> Candidate:
    if mean_rank is None and rsr is not None and mean_surprisal is not None:
        mean_rank = rsr * mean_surprisal
    made = (rsr, mean_rank, mean_surprisal, verdict, dup, truncated, n_tokens, mean_entropy)
    return Candidate(tid, "s-" + tid, teacher, problem, *made)


def ids(cs: list[Candidate]) -> list[str]:
    return [c.trajectory_id for c in cs]


POOL = [
    cand("t01", "A", "p1", 2.0),
    cand("t02", "B", "p1", 1.0),
    cand("t03", "C", "p1", 1.0),  # ties t02 on RSR: t02 wins on trajectory_id
    cand("t04", "A", "p2", 3.0),
    cand("t05", "B", "p2", 0.1, verdict="incorrect"),  # best RSR but wrong
    cand("t06", "C", "p2", 0.2, dup=True),  # good RSR but a duplicate
    cand("t07", "A", "p3", math.nan),  # only candidate of p3 has no RSR
    cand("t08", "B", "p4", None, mean_rank=None, mean_surprisal=None),
]


def test_per_problem_min_rsr_ties_and_nan() -> None:
    policy = SelectionPolicy(name="per_problem_min_rsr")
    assert ids(select(POOL, policy)) == ["t02", "t04"]
    # The result does not depend on the candidates' order.
    shuffled = POOL[:]
    random.Random(0).shuffle(shuffled)
    assert ids(select(shuffled, policy)) == ["t02", "t04"]
    assert ids(select(list(reversed(POOL)), policy)) == ["t02", "t04"]


def test_filters_can_be_relaxed() -> None:
    assert ids(select(POOL, SelectionPolicy(name="per_problem_min_rsr", verified_only=False))) == ["t02", "t05"]
    assert ids(select(POOL, SelectionPolicy(name="per_problem_min_rsr", exclude_duplicates=False))) == ["t02", "t06"]
    everything = SelectionPolicy(name="rsr_threshold", threshold=100, verified_only=False, exclude_duplicates=False)
    assert ids(select(POOL, everything)) == ["t01", "t02", "t03", "t04", "t05", "t06"]  # NaN/None never selected


def test_rank_teachers_is_ratio_of_sums() -> None:
    cs = [
        cand("a1", "A", "p1", 2.0, mean_rank=2.0, mean_surprisal=1.0),
        cand("a2", "A", "p2", 1.0, mean_rank=4.0, mean_surprisal=4.0),
        cand("b1", "B", "p1", 3.0, mean_rank=3.0, mean_surprisal=1.0),
        cand("b2", "B", "p2", 0.5, mean_rank=1.0, mean_surprisal=2.0),
        cand("c1", "C", "p1", 1.2, mean_rank=1.2, mean_surprisal=1.0),  # ties A exactly: name breaks it
        cand("d1", "D", "p1", None, mean_rank=None, mean_surprisal=None),  # no usable rows
    ]
    # A = (2 + 4) / (1 + 4) = 1.2 (mean of RSRs would be 1.5); B = (3 + 1) / (1 + 2) = 4/3; C = 1.2.
    ranked = rank_teachers(cs)
    assert [t for t, _, _ in ranked] == ["A", "C", "B"]
    assert ranked[0] == ("A", pytest.approx(1.2), 2)
    assert ranked[2] == ("B", pytest.approx(4 / 3), 2)


def test_top_teachers_uses_eligible_rows() -> None:
    # Over eligible rows: A = (2 + 3) / 2 = 2.5, B = 1.0 (t05 wrong), C = 1.0 (t06 dup) -> B, C tie -> B first.
    assert [t for t, _, _ in rank_teachers(eligible(POOL, SelectionPolicy(name="top_teachers")))] == ["B", "C", "A"]
    assert ids(select(POOL, SelectionPolicy(name="top_teachers", k=1))) == ["t02"]
    assert ids(select(POOL, SelectionPolicy(name="top_teachers", k=2))) == ["t02", "t03"]
    assert ids(select(POOL, SelectionPolicy(name="top_teachers", k=10))) == ["t01", "t02", "t03", "t04"]


def test_truncated_trajectories_compete_only_when_allowed() -> None:
    pool = POOL + [cand("t09", "A", "p1", 0.5, truncated=True), cand("t10", "C", "p4", 0.5, truncated=True)]
    assert ids(select(pool, SelectionPolicy(name="per_problem_min_rsr"))) == ["t02", "t04"]
    allowed = SelectionPolicy(name="per_problem_min_rsr", include_truncated=True)
    assert ids(select(pool, allowed)) == ["t09", "t04", "t10"]
    # The teacher ranking is over eligible rows too: a truncated prefix does not make a teacher look better.
    assert [t for t, _, _ in rank_teachers(eligible(pool, SelectionPolicy(name="top_teachers")))] == ["B", "C", "A"]


def test_rsr_threshold_is_inclusive() -> None:
    assert ids(select(POOL, SelectionPolicy(name="rsr_threshold", threshold=2.0))) == ["t01", "t02", "t03"]
    assert select(POOL, SelectionPolicy(name="rsr_threshold", threshold=0.5)) == []


def test_policy_validation() -> None:
    with pytest.raises(ValidationError, match="threshold"):
        SelectionPolicy(name="rsr_threshold")
    with pytest.raises(ValidationError):
        SelectionPolicy(name="top_teachers", k=0)
    with pytest.raises(ValidationError):
        SelectionPolicy(name="best_vibes")  # type: ignore[arg-type]


def test_a_policy_ranks_by_the_metric_it_names_lowest_first() -> None:
    pool = [
        cand("a1", "A", "p1", 1.0, n_tokens=900, mean_entropy=0.9),
        cand("b1", "B", "p1", 2.0, n_tokens=100, mean_entropy=0.5),
        cand("a2", "A", "p2", 1.0, n_tokens=800, mean_entropy=0.4),
        cand("b2", "B", "p2", 2.0, n_tokens=300, mean_entropy=None),  # scored before entropy was stored
    ]
    per_problem = {m: ids(select(pool, SelectionPolicy(name="per_problem_min_rsr", metric=m)))
                   for m in ("rsr", "length", "mean_entropy", "mean_surprisal")}  # fmt: skip
    assert per_problem == {
        "rsr": ["a1", "a2"],
        "length": ["b1", "b2"],
        "mean_entropy": ["b1", "a2"],
        "mean_surprisal": ["a1", "a2"],
    }  # fmt: skip  (mean surprisal ties: the smaller id)
    assert rank_teachers(pool, "length") == [("B", 200.0, 2), ("A", 850.0, 2)]
    assert ids(select(pool, SelectionPolicy(name="top_teachers", metric="length"))) == ["b1", "b2"]
    assert ids(select(pool, SelectionPolicy(name="rsr_threshold", threshold=0.5, metric="mean_entropy"))) == [
        "b1", "a2"]  # fmt: skip
    policy = SelectionPolicy(name="per_problem_min_rsr", metric="mean_entropy")
    assert selection_counts(pool, select(pool, policy), policy)["excluded_no_metric"] == 1
    assert "metric" not in SelectionPolicy(name="top_teachers").identity()  # RSR selections keep their ids
    assert SelectionPolicy(name="top_teachers", metric="length").identity()["metric"] == "length"


def _many(n_problems: int = 40) -> list[Candidate]:
    """4 teachers per problem, lengths 50..1000 tokens, RSR falling with length (the lowest RSR = the longest)."""
    out = []
    for p in range(n_problems):
        for k in range(4):
            n = 50 + (p * 37 + k * 211) % 950
            out.append(cand(f"t{p:02d}-{k}", "ABCD"[k], f"p{p:02d}", 5.0 - n / 250, n_tokens=n))
    return out


def test_the_random_baseline_matches_the_selections_tokens_within_two_percent() -> None:
    pool, policy = _many(), SelectionPolicy(name="per_problem_min_rsr")
    chosen = select(pool, policy)
    target = sum(c.n_tokens for c in chosen)
    picks = {seed: token_matched_random(pool, chosen, policy, seed) for seed in (0, 1)}
    for pick in picks.values():
        assert abs(sum(c.n_tokens for c in pick) - target) <= TOKEN_TOLERANCE * target
        assert set(ids(pick)) <= set(ids(eligible(pool, policy)))
    assert ids(picks[0]) != ids(picks[1]) and ids(picks[0]) != ids(chosen)
    shuffled = pool[:]
    random.Random(3).shuffle(shuffled)
    assert token_matched_random(shuffled, chosen, policy, 0) == picks[0]  # the seed decides, not the input order
    # Here the lowest RSR is the longest answer: one random answer per problem holds fewer tokens, so a problem's
    # second answer makes up the rest. Where RSR picks the shorter answers (the usual case), one per problem.
    assert len({c.problem_id for c in picks[0]}) < len(picks[0])
    shortest = select(pool, SelectionPolicy(name="per_problem_min_rsr", metric="length"))
    pick = token_matched_random(pool, shortest, policy, 0)
    assert len({c.problem_id for c in pick}) == len(pick) < len(shortest)  # fewer problems, the same tokens
    assert abs(sum(c.n_tokens for c in pick) - sum(c.n_tokens for c in shortest)) <= 0.02 * sum(
        c.n_tokens for c in shortest
    )


def test_no_random_baseline_when_the_tokens_cannot_be_matched() -> None:
    """One problem, the selection its longer answer: a draw that meets the shorter one first cannot match it (one
    per problem), and says so rather than publishing a baseline of another size."""
    policy = SelectionPolicy(name="per_problem_min_rsr")
    pool = [cand("a", "A", "p1", 2.0, n_tokens=100), cand("b", "B", "p1", 1.0, n_tokens=500)]
    outcomes = []
    for seed in range(8):
        try:
            outcomes.append(ids(token_matched_random(pool, select(pool, policy), policy, seed)))
        except ValueError as err:
            outcomes.append(str(err))
    assert ["b"] in outcomes
    assert any("holds 500 response tokens within 2% (the closest: 100)" in str(o) for o in outcomes)


def test_candidates_from_store(state_dir: Path) -> None:
    def traj(teacher: str, problem: str, response: str) -> Trajectory:
        msgs = [Message(role="user", content=problem), Message(role="assistant", content=response)]
        return Trajectory.build(teacher=teacher, problem=problem, messages=msgs, source_file="f", source_line=1)

    def score(t: Trajectory, rsr: float = 2.0, **kw) -> Score:
        kw = {"student_id": "stu", "dtype": "float32", **kw}
        return Score(trajectory_id=t.trajectory_id, metric_version=METRIC_VERSION, r_max=100, n_tokens=4,
                     sum_rank=4 * rsr, sum_surprisal=4, rsr=rsr, mean_rank=rsr, mean_surprisal=1.0, **kw)  # fmt: skip

    a, b, c = traj("A", "p1", "x"), traj("B", "p1", "y"), traj("B", "p2", "z")
    with Store.open(state_dir / "rsr.duckdb") as store:
        store.add_trajectories([a, b, c], "r")
        store.set_verdicts([Verdict(trajectory_id=a.trajectory_id, verdict="correct")], "r")
        store.set_duplicates(
            [Duplicate(trajectory_id=b.trajectory_id, dup_of=a.trajectory_id, similarity=1, kind="exact")], "r"
        )
        store.add_scores([score(a), score(b, truncated=True), score(a, student_id="other")], "r")
        got = {x.trajectory_id: x for x in store.candidates("stu")}
        assert store.candidates("nobody") == []
        # Scored again in bf16: the two settings never mix, so the caller names one.
        store.add_scores([score(a, 1.0, dtype="bfloat16")], "r")
        with pytest.raises(ValueError, match="several settings"):
            store.candidates("stu")
        bf16 = store.candidates("stu", ScoreKey("bfloat16"))
        assert store.candidates("stu", ScoreKey("float32")) == list(got.values())
    assert set(got) == {a.trajectory_id, b.trajectory_id}  # c has no score for stu
    assert got[a.trajectory_id].verdict == "correct" and not got[a.trajectory_id].is_duplicate
    assert got[b.trajectory_id].verdict is None and got[b.trajectory_id].is_duplicate
    assert got[b.trajectory_id].truncated and not got[a.trajectory_id].truncated
    assert (got[a.trajectory_id].teacher, got[a.trajectory_id].rsr, got[a.trajectory_id].mean_rank) == ("A", 2.0, 2.0)
    assert ids(select(list(got.values()), SelectionPolicy(name="per_problem_min_rsr"))) == [a.trajectory_id]
    assert [(x.trajectory_id, x.rsr) for x in bf16] == [(a.trajectory_id, 1.0)]


def test_the_baseline_is_a_config_key_of_the_pipeline_and_of_each_student() -> None:
    from rsr.config import PipelineConfig
    from rsr.spec import StudentSpec

    config = PipelineConfig.model_validate(
        {"teachers": [{"name": "t", "path": "x.jsonl"}], "baseline": "random",
         "students": ["smollm2-135m", {"ref": "gemma3-270m", "baseline": {"kind": "random", "seed": 5}}]}
    )  # fmt: skip
    assert config.baseline == Baseline(kind="random", seed=0)
    assert [config.baseline_of(s) for s in config.students] == [Baseline(seed=0), Baseline(seed=5)]
    ranked = StudentSpec(policy={"name": "top_teachers", "metric": "mean_entropy"})
    assert config.policy_of(ranked).metric == "mean_entropy"
    with pytest.raises(ValidationError):  # checked when the config is read
        PipelineConfig.model_validate(
            {"teachers": [{"name": "t", "path": "x.jsonl"}], "students": [{"ref": "s", "baseline": "shortest"}]}
        )
