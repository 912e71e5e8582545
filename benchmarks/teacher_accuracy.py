"""Per-teacher accuracy with our verifier vs the upstream ZeroEval leaderboard, on the 8 real teachers.

    .venv/bin/python -m benchmarks.teacher_accuracy [--data ../shared/data] [--workers 2] [--examples 3]

Prints a markdown table (ours vs upstream `Acc` / `No answer`), timings, and a breakdown of the per-item
disagreements with a re-implementation of upstream's rule, so a difference can be explained, not just seen.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._common import SHARED, table, timed
from rsr.curate.ingest import ingest_file
from rsr.curate.verify import VerifierPool, verify_many

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


@dataclass
class Tally:
    rows: list[list] = field(default_factory=list)  # the table's cells
    replica: list[tuple[float, float]] = field(default_factory=list)  # upstream's Acc, upstream's rule here
    disagreements: Counter = field(default_factory=Counter)
    examples: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    n: int = 0
    t_ingest: float = 0.0
    t_verify: float = 0.0


def tally_teacher(path: Path, pool: VerifierPool, timeout: float, upstream: dict, tally: Tally) -> None:
    """Verify one teacher's file; add its table row and its per-item disagreements with upstream's rule."""
    teacher = path.stem
    result, t_ingest = timed(lambda: ingest_file(path))
    verdicts, t_verify = timed(lambda: verify_many(result.trajectories, timeout_s=timeout, pool=pool))
    tally.n, tally.t_ingest, tally.t_verify = (
        tally.n + len(verdicts),
        tally.t_ingest + t_ingest,
        tally.t_verify + t_verify,
    )
    raw = json.loads(path.read_text())
    ours, theirs = Counter(v.verdict for v in verdicts), Counter()
    for traj, v in zip(result.trajectories, verdicts, strict=True):
        record = raw[traj.source_line]
        upstream_says = upstream_verdict(record["output"][0], record["answer"], teacher)
        theirs[upstream_says] += 1
        if upstream_says != v.verdict:
            kind = f"upstream {upstream_says} -> ours {v.verdict}"
            tally.disagreements[kind] += 1
            tally.examples[kind].append((teacher, record["id"], record["answer"], v.extracted_answer, v.detail))
    n, up = len(verdicts), upstream.get(teacher, {})
    acc, up_acc = 100 * ours["correct"] / n, float(up.get("Acc", "nan"))
    noans, up_noans = 100 * ours["no_answer"] / n, float(up.get("No answer", "nan"))
    tally.replica.append((up_acc, 100 * theirs["correct"] / n))
    numbers = [f"{acc:.2f}", f"{up_acc:.2f}", f"{acc - up_acc:+.2f}", f"{noans:.2f}", f"{up_noans:.2f}"]
    tally.rows.append([teacher, n, *numbers, ours["error"]])


def print_report(tally: Tally, examples: int, workers: int) -> None:
    header = ["teacher", "n", "acc (ours)", "acc (upstream)", "Δ", "no answer (ours)", "no answer (upstream)", "errors"]
    print(table(header, tally.rows, align="lrrrrrrr"))
    replica_ok = all(abs(a - b) < 0.01 for a, b in tally.replica)
    print(f"\nupstream rule re-implemented here reproduces summary.json Acc for all teachers: {replica_ok}")
    print(f"\nper-item disagreements with the upstream rule ({sum(tally.disagreements.values())} of {tally.n}):")
    for kind, count in tally.disagreements.most_common():
        print(f"- {kind}: {count}")
        for teacher, pid, gold, ours, detail in tally.examples[kind][:examples]:
            print(f"    - {teacher} #{pid}: gold `{gold}`, ours extracted `{ours}` ({detail})")
    print(
        f"\n{tally.n} trajectories: ingest {tally.t_ingest:.1f}s, verify {tally.t_verify:.1f}s "
        f"({tally.n / tally.t_verify:.0f} trajectories/s with {workers} workers)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED, help="the shared data folder (default ../shared/data)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--examples", type=int, default=3, help="disagreement examples to print per kind")
    ap.add_argument("--teachers", nargs="+", help="only these teachers (default: all)")
    args = ap.parse_args()
    folder = args.data / "zeroeval-math-l5"
    if not folder.is_dir():
        print(f"reference data not found at {folder}: lay out ../shared/data or pass --data / RSR_SHARED_DATA")
        return 2
    upstream = {row["Model"]: row for row in json.loads((folder / "summary.json").read_text())}
    files = sorted(p for p in folder.glob("*.json") if p.name != "summary.json")
    tally = Tally()
    with VerifierPool(args.workers) as pool:
        pool.check_many([("1", "1")])  # start the workers outside the timed region
        for path in files:
            if not args.teachers or path.stem in args.teachers:
                tally_teacher(path, pool, args.timeout, upstream, tally)
    print_report(tally, args.examples, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
