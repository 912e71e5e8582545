"""Run the `rsr` command in a child process, with test hooks installed first.

    python tests/support/rsr_with_hooks.py [--marker FILE] [--min-shard-s SECONDS] [--kill-at POINT] -- ARGS...

--marker FILE    append one JSON line per scoring event: {"ev": "start"|"done", "n": trajectories} around each
                 Student.score call (one per shard) and {"ev": "stored", "n": rows} after each Store.add_scores,
                 each flushed and fsynced, so a test can tell when scoring started and what was lost on a kill.
--min-shard-s S  with --marker: each Student.score call (one shard) takes at least S seconds, as on a slow
                 worker, so that a test's kill lands mid-scoring however fast this machine scores tiny shards.
--kill-at POINT  SIGKILL this process at a point inside rsr.publish (no finally/except runs, as in a real crash):
                 mid-write        the dataset's Arrow files written to the temporary folder, nothing else
                 before-rename    every file written and logged to MLflow, not yet renamed into place
                 before-register  renamed into its final folder, not yet registered in DuckDB
                 after-register   registered in DuckDB, MLflow run not yet marked finished
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install_marker(path: str, min_shard_s: float = 0.0) -> None:
    from rsr.score.student import Student
    from rsr.store.writer import Store

    def mark(event: str, n: int) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"ev": event, "n": n, "t": time.time()}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    score, add_scores = Student.score, Store.add_scores

    def marked_score(self, conversations, **kwargs):
        mark("start", len(conversations))
        began = time.monotonic()
        out = score(self, conversations, **kwargs)
        time.sleep(max(0.0, min_shard_s - (time.monotonic() - began)))
        mark("done", len(conversations))
        return out

    def marked_add_scores(self, scores, run_id):
        n = add_scores(self, scores, run_id)
        mark("stored", n)
        return n

    Student.score = marked_score
    Store.add_scores = marked_add_scores


def _install_kill(point: str) -> None:
    import datasets

    from rsr.publish import files as publish
    from rsr.store.writer import Store

    if point == "mid-write":
        datasets.Dataset.to_parquet = lambda *a, **k: _die()
    elif point in ("before-rename", "before-register"):
        move = publish._move_into_place

        def killing_move(tmp, final):
            if point == "before-rename":
                _die()
            move(tmp, final)
            _die()

        publish._move_into_place = killing_move
    elif point == "after-register":
        record = Store.record_publication

        def killing_record(self, *args):
            record(self, *args)
            _die()

        Store.record_publication = killing_record
    else:
        raise SystemExit(f"unknown --kill-at {point!r}")


def main(argv: list[str]) -> None:
    sep = argv.index("--")
    opts, rsr_args = argv[:sep], argv[sep + 1 :]
    marker, min_shard_s = None, 0.0
    while opts:
        flag, value, opts = opts[0], opts[1], opts[2:]
        if flag == "--marker":
            marker = value
        elif flag == "--min-shard-s":
            min_shard_s = float(value)
        elif flag == "--kill-at":
            _install_kill(value)
        else:
            raise SystemExit(f"unknown option {flag}")
    if marker:
        install_marker(marker, min_shard_s)
    from rsr.cli import app

    app(rsr_args, prog_name="rsr")


if __name__ == "__main__":
    main(sys.argv[1:])
