"""SIGKILL `rsr run` at random moments while it scores, re-run it, and count: nothing lost, nothing twice.

Each killed run is a real `rsr run CONFIG --state DIR` child process (tests/support/rsr_with_hooks.py adds a
progress marker: one line per shard started, finished, stored). The kill lands at a seeded-random point of the scoring
phase: after 0 or 1 of the run's shards were stored, a random fraction of one shard's scoring time later
(RSR_FAULT_SEED overrides the seed). The child holds each shard for at least MIN_SHARD_S seconds, as a slow
worker would, so that the kill lands mid-scoring on a fast machine too (the tiny demo shards score in a blink
there, and a kill timed off them once landed after scoring had finished). After each kill the test opens the
database (replaying the killed writer's WAL, as the next run would) and checks:

- whole shards only: each stored shard is one transaction, so the rows the run added are a multiple of the shard
  size; and they are exactly the rows the run reported stored (no committed write lost);
- lost work: the shards the run finished computing but had not stored (at most the one being written) plus the
  one in flight; the re-run recomputes only those, never a stored score.

The last run is left to finish: every trajectory then has exactly one successful score row per
(trajectory, student, metric_version, r_max); the re-run scored exactly the missing ones; killed runs' `runs` rows
read "interrupted".
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

import pytest

from tests.support.child_runs import (
    CHILD,
    SCORE_KEY,
    child_env,
    count,
    duplicate_score_keys,
    finish,
    fresh_state,
    markers,
    small_demo,
    spawn,
)

N_PROBLEMS = 4  # x 3 teachers = 12 trajectories
SHARD = 2  # 6 shards
N_KILLS = 3
SEED = int(os.environ.get("RSR_FAULT_SEED", "20260126"))
MIN_SHARD_S = 2.0  # each killed run's shards take at least this long (see rsr_with_hooks.py --min-shard-s)


def _scores(db) -> int:
    return count(db, "SELECT count(*) FROM scores WHERE error IS NULL") if db.exists() else 0


def _child_run(config, state, marker, *hooks: str) -> list[str]:
    """`rsr run CONFIG --state STATE` through the hooks script, with a progress marker (and more hook options)."""
    rsr_args = ["run", str(config), "--state", str(state)]
    return [sys.executable, str(CHILD), "--marker", str(marker), *hooks, "--", *rsr_args]


def _kill_mid_scoring(k: int, rng: random.Random, config, state, env, tmp_path) -> dict:
    """Run k: start `rsr run`, SIGKILL it at a seeded-random point of its scoring, check what it left; its figures."""
    db = state / "rsr.duckdb"
    before = _scores(db)
    marker = tmp_path / f"marker-{k}.jsonl"
    proc = spawn(_child_run(config, state, marker, "--min-shard-s", str(MIN_SHARD_S)), env, tmp_path / f"run-{k}.log")
    try:
        # a random point: after 0 or 1 shards of this run were stored, a random fraction of a shard later
        after_shards = rng.randint(0, 1)
        fraction = rng.random()
        started = _wait_stored(marker, proc, after_shards)
        delay = fraction * _shard_seconds(marker)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)  # the main process only, as an OOM kill would
    finally:
        rc, log = finish(proc, timeout=120)
    assert started, f"run {k} never started scoring:\n{log[-3000:]}"
    if not killed:  # it finished before the kill: nothing to measure for this kill point
        assert rc == 0, log[-3000:]
        return {"kill": k, "delay_s": round(delay, 2), "killed": False}
    assert rc == -9

    after = _scores(db)
    events = markers(marker)
    done = sum(e["n"] for e in events if e["ev"] == "done")
    began = sum(e["n"] for e in events if e["ev"] == "start")
    reported = sum(e["n"] for e in events if e["ev"] == "stored")
    added = after - before
    assert duplicate_score_keys(db) == 0
    # every committed shard survived the kill (a kill between commit and marker can only add one shard)
    assert reported <= added <= reported + SHARD
    assert added % SHARD == 0, f"a partial shard was stored: {added} rows"
    # finished-but-unstored work is at most the shard whose write was in progress
    assert done - added <= SHARD
    # shards run one at a time and are stored before the next starts: a kill re-scores at most one shard
    assert began - added <= SHARD
    return {
        "kill": k,
        "delay_s": round(delay, 2),
        "killed": True,
        "stored_before": before,
        "stored_after": after,
        "computed_then_lost": began - added,  # shards in flight or being written: redone later
    }


def _final_run_scores_what_is_missing(config, state, env, tmp_path) -> tuple[int, int]:
    """The last run finishes: it scores exactly what is missing, and nothing twice. (rescored, total)"""
    db = state / "rsr.duckdb"
    before = _scores(db)
    marker = tmp_path / "marker-final.jsonl"
    proc = spawn(_child_run(config, state, marker), env, tmp_path / "run-final.log")
    rc, log = finish(proc, timeout=600)
    assert rc == 0, log[-3000:]
    total = count(db, "SELECT count(*) FROM trajectories")
    assert total == 3 * N_PROBLEMS
    after = _scores(db)
    events = markers(marker)
    rescored = sum(e["n"] for e in events if e["ev"] == "done")
    assert after == total
    assert after - before == rescored == total - before  # the re-run scored the missing keys, and only those
    assert duplicate_score_keys(db) == 0
    assert count(db, f"SELECT count(*) FROM (SELECT {SCORE_KEY} FROM scores GROUP BY ALL HAVING count(*) > 1)") == 0
    assert count(db, "SELECT count(*) FROM publications") == 1
    return rescored, total


@pytest.mark.slow
def test_sigkill_mid_scoring_then_rerun_scores_each_trajectory_exactly_once(
    tmp_path, mlflow_template, prefect_api_url, record_property
):
    rng = random.Random(SEED)
    config = small_demo(tmp_path / "data", N_PROBLEMS, shard_size=SHARD)
    state = fresh_state(tmp_path / "state", mlflow_template)
    db = state / "rsr.duckdb"
    env = child_env(prefect_api_url)
    figures = [_kill_mid_scoring(k, rng, config, state, env, tmp_path) for k in range(N_KILLS)]

    rescored, total = _final_run_scores_what_is_missing(config, state, env, tmp_path)
    killed_runs = sum(1 for f in figures if f["killed"])
    assert count(db, "SELECT count(*) FROM runs WHERE status = 'running'") == 0
    assert count(db, "SELECT count(*) FROM runs WHERE flow_name = 'pipeline' AND status = 'interrupted'") == killed_runs

    lost = [f["computed_then_lost"] for f in figures if f["killed"]]
    assert killed_runs >= 2, f"too few kills landed mid-scoring: {figures}"
    assert max(lost) <= 2 * SHARD  # the shard in flight (+ one finished shard whose write had not committed)
    record_property("crash_scoring", {"figures": figures, "rescored_by_final": rescored, "total": total})
    print(f"\ncrash-scoring figures (seed {SEED}, shard {SHARD}): {figures}; final run scored {rescored}/{total}")


def _wait_stored(marker, proc, shards: int, timeout: float = 300.0) -> bool:
    """Wait until scoring started and `shards` shards were stored by this run; False if it never started."""

    def reached() -> bool:
        events = markers(marker)
        return any(e["ev"] == "start" for e in events) and sum(e["ev"] == "stored" for e in events) >= shards

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if reached():
            return True
        time.sleep(0.05)
    return any(e["ev"] == "start" for e in markers(marker))


def _shard_seconds(marker) -> float:
    """How long one shard takes on this machine: from this run's markers, else a first guess."""
    events = markers(marker)
    starts = [e["t"] for e in events if e["ev"] == "start"]
    dones = [e["t"] for e in events if e["ev"] == "done"]
    spans = [d - s for s, d in zip(starts, dones, strict=False) if d > s]
    return max(spans) if spans else MIN_SHARD_S
