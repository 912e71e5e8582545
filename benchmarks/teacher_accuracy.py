"""Per-teacher accuracy with our verifier vs the upstream ZeroEval leaderboard, on the 8 real teachers.

    .venv/bin/python benchmarks/teacher_accuracy.py [--data ../shared/data] [--workers 2] [--examples 3]

Prints a markdown table (ours vs upstream `Acc` / `No answer`), timings, and a breakdown of the per-item
disagreements with a re-implementation of upstream's rule, so a difference can be explained, not just seen.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rsr.curate.ingest import ingest_file  # noqa: E402
from rsr.curate.verify import VerifierPool, verify_many  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("RSR_SHARED_DATA", REPO.parent / "shared" / "data"))
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_FRACTION = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)\s*")


# ---- upstream's rule, re-implemented to classify disagreements (ZeroEval src/evaluation/math_eval.py) ----------
# Upstream reads the "answer" field (first balanced {...} parsed as strict JSON with newlines removed, else a regex
# on "answer": ...), removes "$" and ",", turns a plain a/b into a float, and counts the item correct when the
# FIRST number of the answer equals the FIRST number of the gold. No answer field -> "no answer".


def _first_json(text: str) -> dict | None:
    depth, start = 0, None
    for i, c in enumerate(text):
        if c == "{":
            start = i if depth == 0 else start
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                try:
                    value = json.loads(text[start : i + 1].replace("\n", ""))
                except ValueError:
                    return None
                return value if isinstance(value, dict) else None
    return None


def _answer_field(text: str) -> str | None:
    for pattern, flags in (
        (r'"answer"\s*:\s*"([^"]*?)"', 0),
        (r'"answer"\s*:\s*"(.*?)"', re.DOTALL),
        (r'"answer"\s*:\s*([^,\s]*)', 0),
        (r"answer\s*:\s*([^,\s]*)", 0),
    ):
        if m := re.search(pattern, text, flags):
            return m.group(1)
    return None


def _sanitize(answer: str) -> str:
    answer = answer.replace("$", "").strip().replace(",", "")
    if (m := _FRACTION.fullmatch(answer)) and float(m.group(2)) != 0:
        answer = str(float(m.group(1)) / float(m.group(2)))  # arithmetic on parsed numbers, never eval
    return answer


def upstream_verdict(raw: str, gold: str, teacher: str) -> str:
    parsed = _first_json(raw)
    answer = parsed.get("answer") if parsed and "answer" in parsed else _answer_field(raw)
    if answer is None and "Llama-3.1" in teacher and (m := re.search(r"\\boxed{([\w\d]+)}", raw)):
        answer = m.group(1)
    if answer is None:
        return "no_answer"
    ours, theirs = _NUMBER.search(_sanitize(str(answer))), _NUMBER.search(_sanitize(gold.replace("#", "").strip()))
    return "correct" if ours and theirs and float(ours.group()) == float(theirs.group()) else "incorrect"


# ---- the run ----------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default ../shared/data)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--examples", type=int, default=3, help="disagreement examples to print per kind")
    args = ap.parse_args()
    folder = args.data / "zeroeval-math-l5"
    if not folder.is_dir():
        print(f"reference data not found at {folder}: lay out ../shared/data or pass --data / RSR_SHARED_DATA")
        return 2
    upstream = {row["Model"]: row for row in json.loads((folder / "summary.json").read_text())}
    files = sorted(p for p in folder.glob("*.json") if p.name != "summary.json")

    rows, disagreements, examples = [], Counter(), defaultdict(list)
    n_total, t_ingest, t_verify = 0, 0.0, 0.0
    with VerifierPool(args.workers) as pool:
        pool.check_many([("1", "1")])  # start the workers outside the timed region
        for path in files:
            teacher = path.stem
            t0 = time.perf_counter()
            result = ingest_file(path)
            t1 = time.perf_counter()
            verdicts = verify_many(result.trajectories, timeout_s=args.timeout, pool=pool)
            t2 = time.perf_counter()
            t_ingest, t_verify, n_total = t_ingest + t1 - t0, t_verify + t2 - t1, n_total + len(verdicts)
            counts = Counter(v.verdict for v in verdicts)
            raw = {i: r for i, r in enumerate(json.loads(path.read_text()))}
            upstream_counts = Counter()
            for traj, v in zip(result.trajectories, verdicts, strict=True):
                record = raw[traj.source_line]
                theirs = upstream_verdict(record["output"][0], record["answer"], teacher)
                upstream_counts[theirs] += 1
                if theirs != v.verdict:
                    kind = f"upstream {theirs} -> ours {v.verdict}"
                    disagreements[kind] += 1
                    examples[kind].append((teacher, record["id"], record["answer"], v.extracted_answer, v.detail))
            n = len(verdicts)
            up = upstream.get(teacher, {})
            rows.append(
                (
                    teacher,
                    n,
                    100 * counts["correct"] / n,
                    float(up.get("Acc", "nan")),
                    100 * counts["no_answer"] / n,
                    float(up.get("No answer", "nan")),
                    100 * upstream_counts["correct"] / n,
                    counts["error"],
                )
            )

    print("| teacher | n | acc (ours) | acc (upstream) | Δ | no answer (ours) | no answer (upstream) | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for teacher, n, acc, up_acc, noans, up_noans, _replica, errors in rows:
        print(
            f"| {teacher} | {n} | {acc:.2f} | {up_acc:.2f} | {acc - up_acc:+.2f} | {noans:.2f} | {up_noans:.2f} "
            f"| {errors} |"
        )
    replica_ok = all(abs(r[6] - r[3]) < 0.01 for r in rows)
    print(f"\nupstream rule re-implemented here reproduces summary.json Acc for all teachers: {replica_ok}")
    print(f"\nper-item disagreements with the upstream rule ({sum(disagreements.values())} of {n_total}):")
    for kind, count in disagreements.most_common():
        print(f"- {kind}: {count}")
        for teacher, pid, gold, ours, detail in examples[kind][: args.examples]:
            print(f"    - {teacher} #{pid}: gold `{gold}`, ours extracted `{ours}` ({detail})")
    print(
        f"\n{n_total} trajectories: ingest {t_ingest:.1f}s, verify {t_verify:.1f}s "
        f"({n_total / t_verify:.0f} trajectories/s with {args.workers} workers)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
