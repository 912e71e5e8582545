"""`rsr add-student --ray-address` on a real Ray cluster of two CPU nodes on this host (tests/support/servers.py),
joined with token authentication as docs/scaling.md says.

One cluster for the module, used in order: a task that no node can place is refused at once, in one line; the
shares given as flags score every trajectory, once; then the head is killed mid-run: the command ends with one line
naming the cluster, nothing it started is left running (no process with its RSR_HOME, no Ray session of its own,
no ~/.ray/auth_token written, no temporary folder), and a re-run scores exactly what was missing.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.child_runs import child_env, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None or importlib.util.find_spec("prefect_ray") is None,
        reason="ray / prefect-ray are the optional extra `ray`: pip install -e '.[ray]' (make test installs it)",
    ),
]

N_TRAJECTORIES = 6
RUN_S = 600


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict]:
    with servers.ray_cluster(n_nodes=2) as running:
        yield running


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A state folder holding a few demo trajectories (stored directly: no model, no flow)."""
    from rsr.curate.ingest import ingest_file
    from rsr.demo import write_demo_data
    from rsr.settings import StateDir
    from rsr.store.writer import Store

    base = tmp_path_factory.mktemp("ray-cluster")
    config = write_demo_data(base / "demo")
    trajectories = ingest_file(config.parent / "careful-tutor.jsonl", teacher="careful-tutor").trajectories
    state = StateDir(base / "home").ensure()
    with Store.open(state.duckdb) as store:
        store.add_trajectories(trajectories[:N_TRAJECTORIES], None)
    return state.root


def _rsr(home: Path, tmp: Path, *args: str, auth: dict | None = None) -> subprocess.Popen:
    """`rsr` in its own session (its own Prefect server, as at a person's shell), with a private TMPDIR and the
    cluster's token (`auth`)."""
    (tmp / "tmp").mkdir(exist_ok=True)
    env = child_env(None, RSR_HOME=str(home), TMPDIR=str(tmp / "tmp"), **(auth or {}))
    env.pop("PREFECT_API_URL", None)
    env["RAY_CLIENT_RECONNECT_GRACE_PERIOD"] = "5"  # Ray's default 30 s before a client calls a head lost
    out = open(tmp / "rsr.out", "wb")  # noqa: SIM115 - closed with the process, in _done
    proc = subprocess.Popen(
        [sys.executable, "-m", "rsr.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    proc.out = out  # type: ignore[attr-defined]
    return proc


def _done(proc: subprocess.Popen, tmp: Path, timeout: float = RUN_S) -> tuple[int, list[str]]:
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.out.close()  # type: ignore[attr-defined]
    return rc, (tmp / "rsr.out").read_text(errors="replace").splitlines()


def _scores(home: Path, template: str) -> tuple[int, int]:
    """(score rows, distinct trajectories) of the student with this template."""
    from rsr.store.queries import Reader

    with Reader.open(home / "rsr.duckdb") as reader:
        _, rows = reader.query(
            "SELECT count(*), count(DISTINCT trajectory_id) FROM scores JOIN students USING (student_id) "
            "WHERE students.info->>'chat_template' = ?",
            [template],
        )
    return rows[0]


def _own_processes(home: Path) -> list[int]:
    """Live processes whose environment names this state folder: the command, its Prefect server, and the Ray
    workers it scored on (RSR_HOME travels with every scoring task)."""
    marker = f"RSR_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                if not (entry / "stat").read_text().split(") ", 1)[1].startswith("Z"):
                    found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def _scoring_on_the_cluster(home: Path) -> bool:
    """A Ray worker is running one of this command's scoring tasks (Ray names the process after the task)."""
    for pid in _own_processes(home):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::score-shard"):
                return True
        except OSError:
            continue
    return False


def test_add_student_scores_on_cpu_nodes_with_the_shares_given(cluster, home, tmp_path):
    # The default share (one GPU a task) fits no CPU node: said at once, in one line.
    address, auth = cluster["address"], cluster["auth"]
    rc, out = _done(_rsr(home, tmp_path, "add-student", "smollm2-135m", "--ray-address", address, auth=auth), tmp_path)
    assert rc == 2 and len(out) == 1, out
    assert out[0].startswith(f"error: no node of {cluster['address']} can run a scoring task: each asks 1 CPU + 1 GPU")
    assert "--ray-gpus-per-task 0" in out[0]

    args = ["add-student", "smollm2-135m", "--chat-template", "chatml", "--ray-address", cluster["address"]]
    rc, out = _done(_rsr(home, tmp_path, *args, "--ray-gpus-per-task", "0", auth=auth), tmp_path)
    assert rc == 0, out
    assert f"scored {N_TRAJECTORIES} trajectories for smollm2-135m@" in "\n".join(out), out  # after any progress bar
    assert _scores(home, "chatml") == (N_TRAJECTORIES, N_TRAJECTORIES)
    assert not list((tmp_path / "tmp").glob("rsr-ray-*"))  # no folder left of the code shipped to the cluster


def test_a_lost_head_is_one_line_and_a_rerun_completes_once(cluster, home, tmp_path):
    auth_token = Path.home() / ".ray" / "auth_token"
    had_token = auth_token.exists()
    args = ["add-student", "smollm2-135m", "--chat-template", "llama3"]
    proc = _rsr(home, tmp_path, *args, "--ray-address", cluster["address"], "--ray-gpus-per-task", "0",
                auth=cluster["auth"])  # fmt: skip
    try:
        assert wait_for(lambda: _scoring_on_the_cluster(home), RUN_S, proc), (tmp_path / "rsr.out").read_text()
        os.killpg(cluster["head"], signal.SIGKILL)  # the head and everything it ran
        killed = time.monotonic()
        rc, out = _done(proc, tmp_path, timeout=120)
    finally:
        for pid in _own_processes(home):  # never leave one behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
    assert rc == 2 and out == [out[-1]], out  # one line, nothing of Ray's on the terminal
    assert out[0].startswith(f"error: lost the Ray cluster at {cluster['address']}: its head stopped answering")
    print(f"the command ended {time.monotonic() - killed:.0f} s after the head was killed")

    # Nothing of the command's own is left: no process (the scoring worker went with its node), no Ray session it
    # started on its own (Ray's auto-connect would start a local one after a lost connection), no token, no folder.
    assert wait_for(lambda: not _own_processes(home), 60), [Path(f"/proc/{p}/cmdline").read_bytes()
                                                              for p in _own_processes(home)]  # fmt: skip
    assert not (tmp_path / "tmp" / "ray").exists() and not list((tmp_path / "tmp").glob("rsr-ray-*"))
    assert auth_token.exists() == had_token
    assert _scores(home, "llama3") == (0, 0)  # the one shard was in flight: nothing half-stored

    # The store is intact: a re-run (in this process's way, no Ray) scores exactly what was missing.
    rc, out = _done(_rsr(home, tmp_path, *args), tmp_path)
    assert rc == 0 and f"scored {N_TRAJECTORIES} trajectories" in "\n".join(out), out
    assert _scores(home, "llama3") == (N_TRAJECTORIES, N_TRAJECTORIES)
    assert _scores(home, "chatml") == (N_TRAJECTORIES, N_TRAJECTORIES)
