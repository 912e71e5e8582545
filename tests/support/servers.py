"""Background servers for tests (Prefect, MLflow, a Ray cluster): started in their own session on a port the OS
chose, waited for with a generous deadline (a busy 2-core box), and stopped with their whole process group, even on
failure."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

START_S = 240  # a server's start-up on a loaded CI box; the product itself allows 120 s for Prefect's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path, cwd: Path) -> subprocess.Popen:
    """A background process in its own session (so its whole group can be killed), output to a log file."""
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, grace_s: float = 20) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:  # the group may hold children (workers, flow-run subprocesses) that outlived the leader
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=grace_s)


def tail(log: Path, n: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else "(no log)"


def until(what: str, check: Callable[[], object], timeout_s: float, log: Path | None = None, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tail(log) if log else ''}")


def base_env(home: Path, api_url: str | None = None) -> dict:
    """This process's environment without its Prefect settings, with a Prefect home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_LEVEL="INFO",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@contextmanager
def http_server(cmd: list[str], env: dict, tmp: Path, health_url: str, name: str) -> Iterator[Path]:
    """Run `cmd` until the block ends; yields its log once `health_url` answers 200."""
    import httpx

    log = tmp / f"{name}.log"
    proc = start(cmd, env, log, tmp)
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited ({proc.returncode})\n{tail(log)}")
            try:
                return httpx.get(health_url, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        until(f"{name} health", healthy, START_S, log)
        yield log
    finally:
        stop(proc)


@contextmanager
def prefect_server(tmp: Path) -> Iterator[str]:
    """A real `prefect server start` (SQLite under tmp); yields its API URL."""
    port = free_port()
    env = base_env(tmp / "server-home") | {"PREFECT_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/api"
    with http_server(cmd, env, tmp, f"{url}/health", "prefect-server"):
        yield url


@contextmanager
def ray_cluster(n_nodes: int = 2, cpus: int = 1) -> Iterator[dict]:
    """A Ray cluster of CPU nodes on this host (`ray start --head`, then `ray start --address` for each other node),
    each in its own session and temporary folder, with token authentication; yields {"address" (ray://...), "head"
    (the head's process group), "auth" (the variables a client needs)}; every node's processes are killed at the
    end, whatever happened.

    On a loaded 2-core box: the head's client server gets 3 minutes to start a client's session (Ray's default 30 s
    fails there), gRPC's fork handlers are off (a fork under load crashed the client proxy), and a node whose head
    is gone stops after 5 s instead of 60 (RAY_gcs_rpc_server_reconnect_timeout_s)."""
    temp = Path(tempfile.mkdtemp(prefix="rsr-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    ray = Path(sys.executable).with_name("ray")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PREFECT_"))}
    env |= {"RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "180", "GRPC_ENABLE_FORK_SUPPORT": "0"}
    env |= {"RAY_gcs_rpc_server_reconnect_timeout_s": "5", "RAY_USAGE_STATS_ENABLED": "0"}
    # Token authentication, as docs/scaling.md joins nodes (the token from the environment: ~/.ray is not touched).
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port, client_port = free_port(), free_port()
    common = [f"--num-cpus={cpus}", "--num-gpus=0", "--disable-usage-stats"]
    head_cmd = [str(ray), "start", "--head", f"--port={port}", f"--ray-client-server-port={client_port}",
                "--include-dashboard=false", f"--temp-dir={temp / 't'}", *common]  # fmt: skip
    node_cmd = [str(ray), "start", f"--address=127.0.0.1:{port}", *common]
    started: list[subprocess.Popen] = []
    try:
        for cmd in [head_cmd] + [node_cmd] * (n_nodes - 1):
            started.append(start(cmd, env, temp / f"node{len(started)}.log", temp))
            if started[-1].wait(timeout=START_S) != 0:  # `ray start` returns once its node has joined
                pytest.fail(f"{' '.join(cmd)} failed\n{tail(temp / f'node{len(started) - 1}.log')}")
        auth = {k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        yield {"address": f"ray://127.0.0.1:{client_port}", "head": started[0].pid, "auth": auth}
    finally:
        for proc in started:  # each node's processes stayed in the session its `ray start` opened
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)
