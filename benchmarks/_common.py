"""What the benchmark scripts share: the reference trajectories, timing, markdown tables. No torch at import."""

from __future__ import annotations

import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# RSR_SHARED_DATA: where ../shared/data is not beside the checkout (the tests honour it too)
SHARED = Path(os.environ.get("RSR_SHARED_DATA", REPO.parent / "shared" / "data"))
ZEROEVAL = SHARED / "zeroeval-math-l5"

Conversation = list[dict[str, str]]


def load_conversations(n: int, teachers: Sequence[str] | None = None, folder: Path = ZEROEVAL) -> list[Conversation]:
    """[user: problem, assistant: the teacher's raw output], round-robin over the teacher files (record 0 of every
    teacher, then record 1, ...), skipping empty outputs; `teachers` limits the files (default: all of them)."""
    if not folder.is_dir():
        sys.exit(
            f"the reference data folder {folder} is missing (see ../shared/data/README.md; or set RSR_SHARED_DATA)"
        )
    files = [folder / f"{t}.json" for t in teachers] if teachers else sorted(folder.glob("*.json"))
    records = [json.loads(f.read_text(encoding="utf-8")) for f in files if f.name != "summary.json"]
    out: list[Conversation] = []
    for i in range(max(map(len, records), default=0)):
        for rec in (r[i] for r in records if i < len(r)):
            text = rec["output"][0] if rec.get("output") else ""
            if isinstance(text, str) and text.strip() and rec.get("problem", "").strip():
                out.append([{"role": "user", "content": rec["problem"]}, {"role": "assistant", "content": text}])
                if len(out) == n:
                    return out
    print(f"only {len(out)} non-empty trajectories in {folder} (asked for {n})", file=sys.stderr)
    return out


def timed(fn: Callable[[], object], device: object = None) -> tuple[object, float]:
    """fn's result and wall seconds; on CUDA the device is synchronised on both sides."""
    cuda = getattr(device, "type", device) == "cuda"
    gc.collect()
    if cuda:
        import torch

        torch.cuda.synchronize()
    started = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - started


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A markdown table; cells are str()-ed (format numbers before); align: one "l" or "r" per column (default l)."""
    rule = ("---:" if a == "r" else "---" for a in align.ljust(len(header), "l"))
    lines = ["| " + " | ".join(header) + " |", "|" + "".join(f"{r}|" for r in rule)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
