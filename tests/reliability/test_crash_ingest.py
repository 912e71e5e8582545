"""SIGKILL the ingest task mid-file, re-run it, and count: every record stored exactly once, nothing lost.

Each killed run is a real child process running the product's ingest task (tasks/curate.py's ingest_teacher,
whose work is rsr/stages/curate.py) on one JSONL file of good records, repeated records and malformed lines, in
chunks of CHUNK records (each chunk stored in its own transactions). The kills land at two kinds of places:

- inside a chunk (the child kills itself, as an OOM kill would, right after a chunk's trajectories committed and
  before its quarantine rows and lineage were written): the half-stored chunk is completed by the re-run;
- at a seeded-random moment after some chunks were stored, from outside (the test sends SIGKILL).

After each kill the database opens (replaying the killed writer's WAL) with whole committed chunks only; the final,
unkilled run leaves exactly the trajectories and quarantine rows that reading the file in memory gives, each once,
with their problems and the file's lineage digest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

import pytest

from rsr.curate.ingest import ingest_file, input_digest
from tests.support.child_runs import count, finish, markers, spawn, wait_for

CHUNK = 40
N_GOOD = 400  # + repeats and malformed lines: ~11 chunks
SEED = int(os.environ.get("RSR_FAULT_SEED", "20260126"))

# The child: the ingest task on one file, with a marker line per stored chunk; optionally killing itself after
# chunk K's trajectories committed (before its quarantine rows). Chunks are slowed a little so an outside kill
# lands mid-file on a fast machine too.
CHILD = """
import functools, json, os, signal, sys, time
from pathlib import Path
import rsr_tasks.curate as curate
import rsr.stages.curate as stage
from dataclasses import asdict
from rsr.curate import ingest
from rsr.store.writer import Store

db, path, marker, kill_inside = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
stage.iter_ingest = functools.partial(ingest.iter_ingest, chunk_size=int(sys.argv[5]))
add_trajectories, chunks = Store.add_trajectories, []

def marked(self, trajectories, run_id):
    n = add_trajectories(self, trajectories, run_id)
    chunks.append(n)
    with open(marker, "a") as fh:
        fh.write(json.dumps({"chunk": len(chunks), "new": n}) + "\\n")
        fh.flush()
        os.fsync(fh.fileno())
    if len(chunks) == kill_inside:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.1)
    return n

Store.add_trajectories = marked
with Store.open(db) as store:
    run_id = store.start_run("crash-ingest", {})
got = asdict(curate.ingest_teacher.fn(db, run_id, "t", path))
print(json.dumps({k: v for k, v in got.items() if k != "problem_ids"}))
"""


def _write_input(path) -> None:
    rng = random.Random(SEED)
    lines = []
    for i in range(N_GOOD):
        record = {
            "id": i,
            "answer": str(i % 7),
            "messages": [
                {"role": "user", "content": f"Problem {i // 2}: what is {i % 7}?"},
                {"role": "assistant", "content": f"Reasoning {i} {rng.random()}. The answer is $\\boxed{{{i % 7}}}$."},
            ],
        }
        lines.append(json.dumps(record))
        if rng.random() < 0.05:
            lines.append(json.dumps(record))  # the same record again: one trajectory, stored once
        if rng.random() < 0.04:
            lines.append(json.dumps(record)[:-9])  # cut mid-record
        if rng.random() < 0.02:
            lines.append(json.dumps({**record, "messages": record["messages"][:1]}))  # no assistant turn
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _child(tmp_path, db, source, k: int, kill_inside: int):
    marker = tmp_path / f"marker-{k}.jsonl"
    args = [sys.executable, "-c", CHILD, str(db), str(source), str(marker), str(kill_inside), str(CHUNK)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
    return spawn(args, env, tmp_path / f"ingest-{k}.log"), marker


@pytest.mark.slow
def test_sigkill_mid_ingest_then_rerun_stores_each_record_exactly_once(tmp_path):
    rng = random.Random(SEED)
    source = tmp_path / "teacher.jsonl"
    _write_input(source)
    expected = ingest_file(source, teacher="t")
    good = {t.trajectory_id for t in expected.trajectories}
    bad = {(r.source_line, r.reason) for r in expected.rejected}
    n_chunks = -(-(N_GOOD + len(bad)) // CHUNK)
    assert expected.duplicates_skipped > 0 and len(bad) > 5 and n_chunks >= 8
    db = tmp_path / "rsr.duckdb"

    kills = [("inside", rng.randint(2, n_chunks // 2)), ("outside", rng.randint(2, n_chunks // 2)),
             ("inside", rng.randint(n_chunks // 2, n_chunks - 1))]  # fmt: skip
    stored = []
    for k, (how, at) in enumerate(kills):
        proc, marker = _child(tmp_path, db, source, k, at if how == "inside" else 0)
        try:
            if how == "outside":
                wait_for(lambda: len(markers(marker)) >= at, timeout=300, proc=proc)  # noqa: B023
                time.sleep(rng.uniform(0.0, 0.1))
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            rc, log = finish(proc, timeout=300)
        assert rc == -9, f"run {k} ({how}) was not killed mid-file (rc {rc}):\n{log[-3000:]}"
        rows = count(db, "SELECT count(*) FROM trajectories")
        assert rows < len(good), f"run {k} stored everything before its kill"
        # whole chunks of trajectories only, each at most once (the table's key), none outside the file
        assert count(db, "SELECT count(*) - count(DISTINCT trajectory_id) FROM trajectories") == 0
        assert count(db, "SELECT count(*) FROM trajectories WHERE teacher <> 't'") == 0
        stored.append(rows)
    assert stored == sorted(stored)  # a re-run never loses what an earlier one committed

    proc, marker = _child(tmp_path, db, source, len(kills), 0)
    rc, log = finish(proc, timeout=300)
    assert rc == 0, log[-3000:]
    summary = json.loads(log.strip().splitlines()[-1])
    assert summary["new"] == len(good) - stored[-1]  # the re-run added exactly what was missing
    with_ids = count(db, "SELECT count(*) FROM trajectories WHERE list_contains(?, trajectory_id)", [sorted(good)])
    assert with_ids == count(db, "SELECT count(*) FROM trajectories") == len(good)
    assert count(db, "SELECT count(*) FROM quarantine") == len(bad)
    lines = count(db, "SELECT count(DISTINCT (source_line, reason)) FROM quarantine")
    assert lines == len(bad)
    orphans = "SELECT count(*) FROM trajectories WHERE problem_id NOT IN (SELECT problem_id FROM problems)"
    assert count(db, orphans) == 0
    digest = input_digest(source).sha256
    assert count(db, "SELECT count(*) FROM source_files WHERE path = ? AND sha256 = ?", [str(source), digest]) == 1
