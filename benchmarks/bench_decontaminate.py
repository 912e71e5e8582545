"""Decontamination at real size: `rsr add-benchmark` checking a million stored trajectories against 20,000 benchmark
problems, as a whole command, against a naive baseline in the same run.

Our seeded generator writes benchmark problems (word problems of 30-90 words, a number every ~9 words, drawn from
a 3,000-word vocabulary with Zipf frequencies: phrases recur, as in real problem sets) and a state folder whose
trajectories' prompts are other problems of the same kind; 1% of them hold a benchmark problem (verbatim, with its
numbers changed, or inside a longer request, case and spacing changed). By default every prompt is distinct (the
hard case: nothing to share); `--teachers 4` gives each prompt to 4 teachers, as real curation data has.

Measured, each in its own process under /usr/bin/time -v (wall time, peak RSS of the command and its children):

ours      `rsr add-benchmark bench bench.jsonl --state S`: the whole command (its temporary Prefect server, the flow,
          reading the benchmark, registering it, checking every stored trajectory, storing the hits)
baseline  the common script's method (open-r1's scripts/decontaminate.py: lower-case, split on whitespace, a set of
          every 8-gram string of the benchmark, a prompt flagged when any of its 8-grams is in it), over the same
          prompts read from the same DuckDB file; nothing stored

and then the matching alone, both in one process on the same prompts (CPU seconds, reading excluded).

    .venv/bin/python -m benchmarks.bench_decontaminate --n 1000000 --problems 20000     # targets: <= 5 min, <= 1 GB
    .venv/bin/python -m benchmarks.bench_decontaminate --n 100000 --problems 20000 --teachers 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import REPO, cpu_name, loadavg, table

CONTAMINATED = 0.01
INTROS = ("Solve the following problem and explain each step.", "Please help me with my homework:", "Question:")


def _vocabulary(rng: random.Random, size: int = 3000) -> tuple[list[str], list[float]]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(size)})
    return words, [1.0 / (i + 1) for i in range(len(words))]


def _problem(rng: random.Random, vocab: tuple[list[str], list[float]]) -> str:
    words = rng.choices(vocab[0], vocab[1], k=rng.randint(30, 90))
    for i in range(rng.randrange(9), len(words), 9):
        words[i] = str(rng.randint(2, 999))
    return " ".join(words).capitalize() + "?"


def _leaked(problem: str, rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return problem
    if kind == 1:
        return re.sub(r"\d+", lambda m: str(int(m.group()) + rng.randint(1, 50)), problem)
    return f"{rng.choice(INTROS)}\n\n{problem.upper().replace(' ', '  ')}\n\nThank you!"


def generate(folder: Path, n: int, problems: int, teachers: int, seed: int) -> tuple[Path, Path, int]:
    """bench.jsonl (the benchmark) and a state folder holding n trajectories; returns them and how many hold a
    benchmark problem (planted)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rsr.store.connect import writer_lock
    from rsr.store.writer import Store

    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    bench = [_problem(rng, vocab) for _ in range(problems)]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "bench.jsonl", "w", encoding="utf-8") as fh:
        for i, text in enumerate(bench):
            fh.write(json.dumps({"id": i, "problem": text}) + "\n")
    parts, planted, made = folder / "parts", [], 0
    parts.mkdir(exist_ok=True)
    while made < n:
        rows = []
        for _ in range(min(100_000, n - made) // teachers or 1):
            leak = rng.random() < CONTAMINATED
            prompt = _leaked(rng.choice(bench), rng) if leak else _problem(rng, vocab)
            for t in range(teachers):
                rows.append((f"t-{made + len(rows):012d}", f"teacher-{t}", prompt))
                planted += [rows[-1][0]] if leak else []
        made += len(rows)
        table_ = pa.table({
            "trajectory_id": [r[0] for r in rows], "teacher": [r[1] for r in rows], "problem": [r[2] for r in rows],
            "messages": [json.dumps([{"content": r[2], "role": "user"}, {"content": {"$rsr": "response"},
                                     "role": "assistant"}]) for r in rows],
        })  # fmt: skip
        pq.write_table(table_, parts / f"{made:09d}.parquet")
    state = folder / "state"
    # Under the writer lock, as a flow writes: it records the file as checked, so the command does not read it whole
    with writer_lock(state, "bench_decontaminate"), Store.open(state / "rsr.duckdb") as store:
        store._con.execute(
            f"""INSERT INTO trajectories (trajectory_id, teacher, problem_id, problem, messages, response,
                source_file, source_line, ingested_at)
            SELECT trajectory_id, teacher, 'p-' || md5(problem), problem, messages, 'The answer is 42.',
                   'generated', 0, now()::TIMESTAMP
            FROM read_parquet('{parts}/*.parquet') ORDER BY trajectory_id"""
        )
    shutil.rmtree(parts)
    (folder / "planted.txt").write_text("\n".join(planted), encoding="utf-8")
    return folder / "bench.jsonl", state, len(planted)


def reset(state: Path) -> None:
    """The generated state as it was before the benchmark was added (--again: measure again without generating)."""
    from rsr.store.connect import writer_lock
    from rsr.store.writer import Store

    with writer_lock(state, "bench_decontaminate"), Store.open(state / "rsr.duckdb") as store:
        for table in ("contamination_hits", "contamination_checks", "contamination_check_sets", "benchmark_problems",
                      "benchmarks", "runs"):  # fmt: skip
            store._con.execute(f"DELETE FROM {table}")
        store._con.execute("CHECKPOINT")


def baseline(db: Path, bench: Path, n: int = 8) -> None:
    """The naive method, run as its own process (--baseline): prints flagged and planted-found counts as JSON."""
    planted = set((bench.parent / "planted.txt").read_text(encoding="utf-8").split())
    import duckdb

    lookup = set()
    for line in bench.read_text(encoding="utf-8").splitlines():
        words = " ".join(json.loads(line)["problem"].lower().split()).split()
        lookup.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    con = duckdb.connect(str(db), read_only=True)
    cur = con.execute(
        """SELECT trajectory_id, [m.content FOR m IN from_json(messages, '[{"role": "VARCHAR", "content": "VARCHAR"}]')
                   IF m.role = 'user'] FROM trajectories"""
    )
    flagged = found = 0
    while rows := cur.fetchmany(50_000):
        for trajectory_id, users in rows:
            words = " ".join(" ".join(u or "" for u in users).lower().split()).split()
            hit = any(" ".join(words[i : i + n]) in lookup for i in range(len(words) - n + 1))
            flagged += hit
            found += hit and trajectory_id in planted
    print(json.dumps({"flagged": flagged, "found": found}))


def core(db: Path, bench: Path, n: int = 8) -> None:
    """The matching alone, in this process, on the same prompts (read a chunk at a time, not timed): our Matcher
    (exact, n-gram shares, numbers masked, evidence) against the naive method's loop. Prints CPU seconds as JSON."""
    import duckdb

    from rsr.curate.decontaminate import BenchmarkProblem, Matcher

    texts = [json.loads(line)["problem"] for line in bench.read_text(encoding="utf-8").splitlines()]
    started = time.process_time()
    matcher = Matcher([BenchmarkProblem("bench", i, t) for i, t in enumerate(texts)])
    ours, flagged = time.process_time() - started, 0
    started = time.process_time()
    lookup = set()
    for text in texts:
        words = text.lower().split()
        lookup.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    theirs, naive_flagged = time.process_time() - started, 0
    cur = duckdb.connect(str(db), read_only=True).execute("SELECT problem FROM trajectories")
    while rows := cur.fetchmany(20_000):
        prompts = [[p] for (p,) in rows]
        started = time.process_time()
        flagged += sum(bool(h) for h in matcher.match(prompts))
        ours += time.process_time() - started
        started = time.process_time()
        for (p,) in rows:
            words = p.lower().split()
            naive_flagged += any(" ".join(words[i : i + n]) in lookup for i in range(len(words) - n + 1))
        theirs += time.process_time() - started
    print(json.dumps({"ours": ours, "theirs": theirs, "flagged": flagged, "naive_flagged": naive_flagged}))


def _timed(args: list[str], env: dict[str, str], log: Path) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB of the command and its children, its stdout), under /usr/bin/time -v."""
    started = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-v", *args], env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    log.write_text(out.stdout + out.stderr, encoding="utf-8")
    if out.returncode:
        sys.exit(f"{' '.join(args)} failed ({out.returncode}); see {log}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) // 1024
    return wall, rss, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="stored trajectories")
    parser.add_argument("--problems", type=int, default=20_000, help="benchmark problems")
    parser.add_argument("--teachers", type=int, default=1, help="trajectories per distinct prompt")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/rsr-bench-decontaminate"))
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--again", action="store_true", help="measure again on the folder's generated data")
    parser.add_argument("--baseline", nargs=2, type=Path, metavar=("DB", "BENCH"), help=argparse.SUPPRESS)
    parser.add_argument("--core", nargs=2, type=Path, metavar=("DB", "BENCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline or args.core:
        (baseline if args.baseline else core)(*(args.baseline or args.core))
        return
    started = time.perf_counter()
    if args.again:
        bench, state = args.folder / "bench.jsonl", args.folder / "state"
        planted = len((args.folder / "planted.txt").read_text(encoding="utf-8").split())
        reset(state)
    else:
        shutil.rmtree(args.folder, ignore_errors=True)
        bench, state, planted = generate(args.folder, args.n, args.problems, args.teachers, args.seed)
    print(f"{'reset' if args.again else 'generated'} {args.n} trajectories ({planted} planted) and {args.problems} "
          f"benchmark problems in {time.perf_counter() - started:.0f} s; {cpu_name()}, load {loadavg():.1f}",
          flush=True)  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", RSR_LOG_TO_TERMINAL="1", PYTHONUNBUFFERED="1")
    rsr = str(Path(sys.executable).with_name("rsr"))
    ours = _timed([rsr, "add-benchmark", "bench", str(bench), "--state", str(state)], env, args.folder / "ours.log")
    import duckdb

    planted_ids = (args.folder / "planted.txt").read_text(encoding="utf-8").split()
    with duckdb.connect(str(state / "rsr.duckdb"), read_only=True) as con:
        flagged, found = con.execute(
            "SELECT count(DISTINCT trajectory_id), count(DISTINCT trajectory_id) FILTER (WHERE list_contains(?, "
            "trajectory_id)) FROM contamination_hits",
            [planted_ids],
        ).fetchall()[0]
    db = state / "rsr.duckdb"
    naive = _timed([sys.executable, "-m", "benchmarks.bench_decontaminate", "--baseline", str(db), str(bench)], env,
                   args.folder / "baseline.log")  # fmt: skip
    theirs = json.loads(naive[2].strip().splitlines()[-1])
    rows = [
        ["ours: rsr add-benchmark (whole command)", f"{ours[0]:.1f}", ours[1], flagged, f"{found}/{planted}"],
        ["baseline: any shared 8-gram string (open-r1's method)", f"{naive[0]:.1f}", naive[1], theirs["flagged"],
         f"{theirs['found']}/{planted}"],
        ["ours / baseline", f"{ours[0] / naive[0]:.2f}x", f"{ours[1] / naive[1]:.2f}x", "", ""],
    ]  # fmt: skip
    print(f"{args.n} trajectories ({args.n // args.teachers} distinct prompts, {planted} hold a benchmark problem) "
          f"vs {args.problems} benchmark problems; load {loadavg():.1f} after")  # fmt: skip
    print(table(["what", "wall s", "peak RSS MB", "trajectories flagged", "planted found"], rows, "lrrrr"))
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_decontaminate", "--core", str(db), str(bench)],
                         env=env, capture_output=True, text=True, cwd=REPO, check=True)  # fmt: skip
    got = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"the matching alone, same process, same prompts (CPU s): ours {got['ours']:.1f} ({got['flagged']} flagged), "
          f"baseline {got['theirs']:.1f} ({got['naive_flagged']} flagged): ours / baseline "
          f"{got['ours'] / got['theirs']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
