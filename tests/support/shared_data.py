"""The real reference data beside the repo (../shared/data, or $RSR_SHARED_DATA) and readers of it."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("RSR_SHARED_DATA", REPO.parent / "shared" / "data"))


def zeroeval_conversations(shared: Path, teacher: str, n: int, start: int = 0) -> list[list[dict]]:
    """Real trajectories as [user: problem, assistant: raw teacher text]."""
    records = json.loads((shared / "zeroeval-math-l5" / f"{teacher}.json").read_text())[start : start + n]
    return [
        [{"role": "user", "content": r["problem"]}, {"role": "assistant", "content": r["output"][0]}] for r in records
    ]
