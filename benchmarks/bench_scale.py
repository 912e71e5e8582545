"""Curation at scale on this CPU: ingest -> dedup -> verify -> store over N generated trajectories.

Our own seeded generator writes realistic teacher outputs: 4 teachers x N/4 problems, 0.3-3 KB responses ending
in a \\boxed answer (integers, fractions, decimals, roots, pi, tuples; some right, some wrong, some in another
but equivalent form, a few with no final answer), 2% near duplicates of another teacher's response to the same
problem, 1% malformed lines (broken JSON, wrong types, no assistant turn, invalid UTF-8). One JSONL file per
teacher, in the messages format with the gold answer in each record.

Then the product's own tasks run in this process (their functions, without the Prefect engine): each stage's
wall time and throughput, the part of it spent in DuckDB (reading + storing), the peak RSS of the whole process
tree (this process + the verifier workers, sampled every 0.2 s), and the DuckDB file size.

    .venv/bin/python -m benchmarks.bench_scale --n 100000           # ~1.5 min here
    .venv/bin/python -m benchmarks.bench_scale --n 1000000          # ~23 min here; targets: peak RSS <= 2 GB, <= 60 min

Heavy imports live inside functions: the verifier's worker processes re-import this file as their __main__.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import threading
import time
from pathlib import Path

from benchmarks._common import table

TEACHERS = ("teacher-a", "teacher-b", "teacher-c", "teacher-d")
ACCURACY = (0.85, 0.75, 0.6, 0.45)  # per teacher: how often the final answer is right
NEAR_DUP, MALFORMED, NO_ANSWER, OTHER_FORM = 0.02, 0.01, 0.02, 0.1
WORDS = (
    "we consider the equation and note that both sides are positive so squaring gives a polynomial whose roots "
    "satisfy the constraint since the sum of the coefficients equals zero by Vieta the product of the roots is "
    "therefore determined substituting back into the original expression we obtain a simpler form which we can "
    "factor further dividing by the common term leaves the quotient and checking each case separately shows that "
    "only one value works hence the area of the triangle follows from the formula for the base times height over two"
).split()


# ---- the generator ------------------------------------------------------------------------------------------


def _gold(rng: random.Random) -> tuple[str, list[str], str]:
    """(gold, equivalent other forms, a wrong answer in the same form)."""
    kind = rng.random()
    a, b = rng.randint(1, 99), rng.randint(2, 30)
    if kind < 0.55:
        n = rng.randint(-50, 2000)
        return str(n), [f"{n}.0"], str(n + rng.choice((-2, -1, 1, 3, 10)))
    if kind < 0.75:
        if a % b == 0:
            a += 1
        return f"\\frac{{{a}}}{{{b}}}", [f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}"], f"\\frac{{{a + 1}}}{{{b}}}"
    if kind < 0.80:
        return f"{a}.5", [f"\\frac{{{2 * a + 1}}}{{2}}"], f"{a}.25"
    if kind < 0.90:
        return f"{a}\\sqrt{{{b}}}", [f"\\sqrt{{{a * a * b}}}"], f"{a + 1}\\sqrt{{{b}}}"
    if kind < 0.95:
        return f"{a}\\pi", [f"\\pi \\cdot {a}"], f"{a + 2}\\pi"
    return f"({a}, {b})", [f"\\left({a},{b}\\right)"], f"({b}, {a})"


class _Prose:
    """Random prose from a pool of generated sentences (one random choice per sentence, not per word: 1M
    responses in minutes), each sentence carrying fresh numbers so that different responses share few shingles."""

    def __init__(self, rng: random.Random, n_sentences: int = 20_000) -> None:
        self.rng = rng
        self.pool = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() for _ in range(n_sentences)
        ]

    def __call__(self, n_bytes: int) -> str:
        rng, out, size = self.rng, [], 0
        while size < n_bytes:
            sentence = f"{rng.choice(self.pool)} {rng.randrange(100_000)}."
            out.append(sentence)
            size += len(sentence) + 1
        return "\n".join(" ".join(out[i : i + 4]) for i in range(0, len(out), 4))


def _response(rng: random.Random, prose: _Prose, teacher: int, gold: tuple[str, list[str], str]) -> str:
    body = prose(rng.randint(250, 2900))
    if rng.random() < NO_ANSWER:
        return body
    right = rng.random() < ACCURACY[teacher]
    answer = (rng.choice(gold[1]) if rng.random() < OTHER_FORM else gold[0]) if right else gold[2]
    return f"{body}\n\nThe answer is $\\boxed{{{answer}}}$."


def _near_copy(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    for _ in range(rng.randint(0, 2)):  # 0 edits: an exact copy under another teacher's name
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def _malformed(rng: random.Random, record: dict) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        line = json.dumps(record)
        return line[: rng.randint(10, len(line) - 2)].encode()  # cut mid-record
    if kind == 1:
        return json.dumps({**record, "messages": "not a list"}).encode()
    if kind == 2:
        return json.dumps({**record, "messages": record["messages"][:1]}).encode()  # no assistant turn
    if kind == 3:
        return json.dumps({**record, "teacher": 7}).encode()
    return json.dumps(record).encode()[:-20] + b"\xff\xfe" + json.dumps(record).encode()[-20:]  # invalid UTF-8


def generate(folder: Path, n: int, seed: int) -> list[Path]:
    """One JSONL file per teacher; reused when the same (n, seed) was generated before."""
    manifest = folder / "manifest.json"
    paths = [folder / f"{t}.jsonl" for t in TEACHERS]
    if manifest.exists() and json.loads(manifest.read_text()) == {"n": n, "seed": seed}:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    prose = _Prose(rng)
    files = [p.open("wb") for p in paths]
    try:
        for k in range(n // len(TEACHERS)):
            problem = f"Problem {k}: " + prose(rng.randint(80, 400))
            gold = _gold(rng)
            previous = None
            for t, fh in enumerate(files):
                if previous is not None and rng.random() < NEAR_DUP * len(TEACHERS) / (len(TEACHERS) - 1):
                    response = _near_copy(rng, previous)
                else:
                    response = _response(rng, prose, t, gold)
                previous = response
                record = {
                    "id": f"{TEACHERS[t]}-{k}",
                    "teacher": TEACHERS[t],
                    "answer": gold[0],
                    "messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": response}],
                }
                line = _malformed(rng, record) if rng.random() < MALFORMED else json.dumps(record).encode()
                fh.write(line + b"\n")
    finally:
        for fh in files:
            fh.close()
    manifest.write_text(json.dumps({"n": n, "seed": seed}))
    return paths


# ---- measuring ----------------------------------------------------------------------------------------------


class TreeRss:
    """Peak resident memory of this process plus its children (the verifier workers), sampled in a thread."""

    def __init__(self, every_s: float = 0.2) -> None:
        import psutil

        self.me, self.every_s, self.peak = psutil.Process(), every_s, 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def now(self) -> int:
        import psutil

        total = self.me.memory_info().rss
        for child in self.me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue  # a worker replaced between the listing and the read
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.now())

    def reset(self) -> None:
        self.peak = self.now()

    def stop(self) -> None:
        self._stop.set()


class DbClock:
    """Seconds spent inside Store calls (DuckDB reads and writes), by wrapping the Store's methods."""

    NAMES = ("open", "responses", "trajectory_rows", "unverified", "upsert_problems", "add_trajectories",
             "add_rejected", "add_source_file", "set_duplicates", "set_verdicts", "close")  # fmt: skip

    def __init__(self) -> None:
        from rsr.store.writer import Store

        self.seconds = 0.0
        for name in self.NAMES:
            setattr(Store, name, self._timed(getattr(Store, name), name == "open"))

    def _timed(self, fn, is_classmethod: bool):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return classmethod(lambda cls, *a, **k: timed(*a, **k)) if is_classmethod else timed


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.0f} MB"


# ---- the run ------------------------------------------------------------------------------------------------


def run(paths: list[Path], work: Path, timeout_s: float) -> list[dict]:
    from rsr.stages.curate import deduplicate, ingest_teacher, verify_answers
    from rsr.store.queries import Reader
    from rsr.store.writer import Store

    db = work / "rsr.duckdb"
    rss, clock = TreeRss(), DbClock()
    with Store.open(db) as store:
        run_id = store.start_run("bench-scale", {"files": [str(p) for p in paths]})
    rows: list[dict] = []

    def stage(name: str, fn, records_of) -> object:
        rss.reset()
        db_before, started = clock.seconds, time.perf_counter()
        result = fn()
        secs = time.perf_counter() - started
        rows.append({"stage": name, "records": records_of(result), "seconds": secs,
                     "db_seconds": clock.seconds - db_before, "peak_rss": rss.peak})  # fmt: skip
        print(f"  {name}: {rows[-1]['records']:,} records in {secs:,.1f}s, peak RSS {_mb(rss.peak)}", flush=True)
        return result

    ingested = stage(
        "ingest",
        lambda: [ingest_teacher(db, run_id, t, str(p)) for t, p in zip(TEACHERS, paths, strict=True)],
        lambda out: sum(o.read + o.quarantined for o in out),
    )
    problem_ids = sorted({pid for o in ingested for pid in o.problem_ids})
    read = sum(o.read for o in ingested)
    stage("dedup", lambda: deduplicate(db, run_id, problem_ids), lambda _: read)
    stage("verify", lambda: verify_answers(db, run_id, timeout_s), lambda n: n)
    rss.stop()
    with Reader.open(db) as store:
        _, counts = store.query(
            """SELECT (SELECT count(*) FROM trajectories), (SELECT count(*) FROM quarantine),
                      (SELECT count(*) FROM duplicates), (SELECT count(*) FROM verdicts)"""
        )
        _, verdicts = store.query("SELECT verdict, count(*) FROM verdicts GROUP BY 1 ORDER BY 1")
    rows.append({"counts": counts[0], "verdicts": verdicts, "db_bytes": db.stat().st_size})
    return rows


def report(rows: list[dict], n: int, total_peak: int, files_bytes: int) -> str:
    stages, summary = rows[:-1], rows[-1]
    total = sum(r["seconds"] for r in stages)
    lines = [
        f"### {n:,} trajectories ({len(TEACHERS)} teachers x {n // len(TEACHERS):,} problems, "
        f"{_mb(files_bytes)} of JSONL), {os.cpu_count()} CPU cores",
        "",
    ]
    cells = [
        [r["stage"], f"{r['records']:,}", f"{r['seconds']:,.1f}", f"{r['records'] / r['seconds']:,.0f}",
         f"{r['db_seconds']:,.1f}", _mb(r["peak_rss"])] for r in stages
    ]  # fmt: skip
    cells.append(["**all**", "", f"**{total:,.1f}** ({total / 60:.1f} min)", "", "", f"**{_mb(total_peak)}**"])
    header = ["stage", "records", "wall s", "records/s", "of which DuckDB s", "peak RSS (tree)"]
    lines.append(table(header, cells, align="lrrrrr"))
    stored, quarantined, dups, verdicts = summary["counts"]
    by_verdict = ", ".join(f"{v} {c:,}" for v, c in summary["verdicts"])
    lines += [
        "",
        f"DuckDB file: {_mb(summary['db_bytes'])}. Stored {stored:,} trajectories, {quarantined:,} quarantined, "
        f"{dups:,} duplicates; verdicts: {by_verdict}.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="trajectories (default 100000)")
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--data", type=Path, default=Path("/tmp/rsr-bench-scale"), help="generated files + DB here")
    ap.add_argument("--timeout", type=float, default=5.0, help="math-verify time limit per check (s)")
    ap.add_argument("--keep", action="store_true", help="keep the DuckDB file afterwards")
    args = ap.parse_args()

    folder = args.data / f"n{args.n}-s{args.seed}"
    started = time.perf_counter()
    paths = generate(folder / "input", args.n, args.seed)
    files_bytes = sum(p.stat().st_size for p in paths)
    print(f"input: {len(paths)} files, {_mb(files_bytes)} ({time.perf_counter() - started:.0f}s)", flush=True)
    work = folder / "state"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows = run(paths, work, args.timeout)
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10  # KiB on Linux
    total_peak = max([own] + [r["peak_rss"] for r in rows[:-1]])
    print()
    print(report(rows, args.n, total_peak, files_bytes))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
