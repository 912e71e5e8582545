"""Helpers for tests that run `rsr` in child processes (tests/reliability): small demo inputs, fresh state folders,
child processes, database snapshots."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).resolve().parent / "rsr_with_hooks.py"  # `rsr` with test hooks (--marker, --kill-at)
RSR = Path(sys.executable).with_name("rsr")

# Every table a re-run must leave alone. `runs` is left out on purpose: each flow run adds its own row.
CONTENT_TABLES = (
    "problems",
    "trajectories",
    "quarantine",
    "duplicates",
    "verdicts",
    "students",
    "scores",
    "publications",
    "publication_items",
)
SCORE_KEY = "trajectory_id, student_id, metric_version, r_max"


def small_demo(folder: Path, n_problems: int, *, shard_size: int = 64, output: str = "demo-sft") -> Path:
    """rsr.demo's data trimmed to the first n_problems (3 teachers each), with a scoring shard size."""
    from rsr.demo import write_demo_data

    config = write_demo_data(folder)
    for path in folder.glob("*.jsonl"):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        path.write_text("".join(lines[:n_problems]), encoding="utf-8")
    # keep the demo's one malformed line, so that quarantine has a row too
    with open(folder / "terse-solver.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"id": "terse-solver-broken", "messages": [{"role": "user", "content": "unterminated\n')
    raw = yaml.safe_load(config.read_text())
    raw.pop("benchmarks", None)  # decontamination has its own tests: these runs stay as short as they were
    raw["scoring"] = {"shard_size": shard_size}
    raw["output"] = output
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return config


def fresh_state(root: Path, mlflow_template: Path) -> Path:
    """A new state folder holding a copy of the initialised MLflow store."""
    root.mkdir(parents=True)
    shutil.copy(mlflow_template, root / "mlflow.db")
    return root


def child_env(prefect_api_url: str | None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if prefect_api_url:
        env["PREFECT_API_URL"] = prefect_api_url  # one Prefect server for all children: no per-child start-up
    env.update(extra)
    return env


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A child in its own session (so a test can always clean it up by its pid), output to a log file."""
    fh = open(log, "wb")  # noqa: SIM115 - closed by the caller via finish()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_handle = fh  # type: ignore[attr-defined]
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        rc = proc.wait()
    kill_group(proc)  # what the child left behind (verifier workers of a killed run): its own group only
    proc.log_handle.close()  # type: ignore[attr-defined]
    return rc, proc.log_path.read_text(errors="replace")  # type: ignore[attr-defined]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's own process group (the child and what it started: verifier workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll until predicate() is true; False on timeout or when proc exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(0.05)
    return False


def snapshot(db: Path) -> dict[str, list[tuple]]:
    """Every row of every content table, in a canonical order (read-only open)."""
    from rsr.store.queries import Reader

    def hashable(row: tuple) -> tuple:  # list columns (scores.surprisal_profile) as tuples, so rows compare as sets
        return tuple(tuple(v) if isinstance(v, list) else v for v in row)

    with Reader.open(db) as store:
        return {t: [hashable(r) for r in store.query(f"SELECT * FROM {t} ORDER BY ALL")[1]] for t in CONTENT_TABLES}


def diff(before: dict[str, list[tuple]], after: dict[str, list[tuple]]) -> dict[str, str]:
    out = {}
    for table in before:
        b, a = set(before[table]), set(after[table])
        if b != a or len(before[table]) != len(after[table]):
            rows = f"{len(before[table])} -> {len(after[table])} rows"
            out[table] = f"{rows}; gone {list(b - a)[:2]}, new {list(a - b)[:2]}"
    return out


def count(db: Path, sql: str, params: list | None = None) -> int:
    from rsr.store.writer import Store

    with Store.open(db) as store:  # read-write: also replays a killed writer's WAL, as the next flow would
        return int(store.query(sql, params)[1][0][0])


def duplicate_score_keys(db: Path) -> int:
    """Successful score rows beyond one per (trajectory, student, metric_version, r_max)."""
    return count(db, f"SELECT count(*) - count(DISTINCT ({SCORE_KEY})) FROM scores WHERE error IS NULL")


def markers(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by the kill
    return out
