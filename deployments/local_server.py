"""The Prefect API server that one `rsr` command runs its flows against: a child that dies with the command.

Prefect's own temporary server (prefect.server.api.server.SubprocessASGIServer) is stopped by an atexit hook, which
a SIGKILL (or the OOM killer) never runs: every killed command left its server behind (~230 MB each). This one is
started the same way (uvicorn over Prefect's app factory, no UI, the state folder's PREFECT_HOME) but asks the
kernel to kill it when the thread that started it, the command's main thread, ends (PR_SET_PDEATHSIG): nothing
outlives the command, whatever ends it. The command points PREFECT_API_URL at it before Prefect is imported.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PORT_TAKEN = 3  # uvicorn's exit status when its port was taken meanwhile: try another


def _die_with(parent: int) -> Callable[[], None]:
    """Run in the child before it execs: be SIGKILLed when the parent's thread ends (or now, if it already did)."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:
            os._exit(125)

    return preexec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _healthy(proc: subprocess.Popen, url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    return False


def start(log: Path, timeout_s: float = 120.0) -> str:
    """Start the server (its output to `log`), wait for its health check and return its API URL; RuntimeError
    naming the log if it does not answer within `timeout_s`."""
    spec = importlib.util.find_spec("prefect")  # not imported: Prefect reads PREFECT_API_URL when it is
    assert spec is not None and spec.origin is not None
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    for _ in range(3):
        port = _free_port()
        cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent), "--factory",
               "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "error", "--lifespan", "on"]  # fmt: skip
        with open(log, "ab") as out:
            # Its own session: Ctrl-C at the terminal reaches the command's group, and a server stopped first
            # would leave the command to retry its Prefect calls for minutes before it could stop.
            proc = subprocess.Popen(  # noqa: PLW1509 (preexec_fn: the one way to ask for PR_SET_PDEATHSIG)
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=_die_with(os.getpid()), start_new_session=True,
            )  # fmt: skip
        atexit.register(_stop, proc)
        url = f"http://127.0.0.1:{port}/api"
        if _healthy(proc, url, timeout_s):
            return url
        if proc.poll() != PORT_TAKEN:
            _stop(proc)
            raise RuntimeError(f"the local Prefect server did not answer within {timeout_s:.0f}s (its log: {log})")
    raise RuntimeError(f"the local Prefect server found no free port (its log: {log})")
