"""Where the scoring shards run, kept apart from what scoring does (flows/score.py), as datatrove's executors keep a
step from knowing where it runs: `InProcess` (one shard in flight, stored before the next starts) or `OnRay` (shards
as Ray tasks on a cluster, up to 16 in flight). The flow hands its shards to `finished` and stores each list of
scores that comes back; it stays the only DuckDB writer either way (docs/scaling.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlparse

from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

import rsr.metric
import rsr_tasks.score
from rsr.config import RaySpec

log = logging.getLogger(__name__)

# What a Ray worker needs from the flow's environment: where converted students live (RSR_MODELS, else
# RSR_HOME/models), the Hugging Face cache and offline switches, quiet Prefect. Never the DuckDB path: workers
# only compute. Ray workers on other hosts do not inherit the driver's environment, so it travels explicitly.
FORWARDED_ENV = (
    "RSR_HOME",
    "RSR_MODELS",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "DO_NOT_TRACK",
    "PREFECT_LOGGING_LEVEL",
)
RAY_IN_FLIGHT = 16  # shards submitted ahead on Ray: enough to keep 16 GPUs busy, few enough to bound the driver
PROBE_S = 10.0  # how long a cluster that stopped answering gets before it is called lost
STOP_S = 15.0  # how long ray.shutdown may take before this process stops waiting for it


class RayUnavailable(ConnectionError):
    """The Ray cluster cannot take the scoring: no node can place a task, or its head stopped answering."""


def executor_for(ray: RaySpec | None) -> InProcess | OnRay:
    return InProcess() if ray is None else OnRay(ray)


class InProcess:
    """In this process, one shard in flight: torch already uses every core for each batch, and a crash costs at
    most the one shard being scored."""

    window = 1

    def task_runner(self) -> ThreadPoolTaskRunner:
        return ThreadPoolTaskRunner(max_workers=1)

    def session(self) -> AbstractContextManager[None]:
        return nullcontext()

    def submitting(self, api_url: str) -> AbstractContextManager[None]:
        return nullcontext()

    def lost(self, err: BaseException) -> RayUnavailable | None:
        return None

    def cancel(self, futures: list) -> None:
        for future in futures:  # at most the one shard being scored: the thread finishes it, nothing is stored
            future.wrapped_future.cancel()


class OnRay:
    """Shards as Ray tasks, each asking for its GPU/CPU share. `session` starts or joins Ray (this process owns that
    connection: the task runner only uses it), checks that a task can be placed at all, and always leaves: a lost
    head or a Ctrl-C ends in seconds, with nothing of Ray left running here."""

    window = RAY_IN_FLIGHT

    def __init__(self, spec: RaySpec) -> None:
        self.spec = spec

    @property
    def where(self) -> str:
        return self.spec.address or "a local Ray instance"

    def task_runner(self):  # noqa: ANN201 (prefect_ray is the optional extra `ray`)
        from prefect_ray import RayTaskRunner

        return RayTaskRunner(address=self.spec.address)

    @contextmanager
    def session(self) -> Iterator[None]:
        ray = _imported_ray()
        if ray.is_initialized():  # the caller's own Ray (a test, a notebook): use it, leave it running
            yield
            return
        try:
            with shipped_code(self.spec) as kwargs:
                ray.init(**kwargs)
        except (ConnectionError, TimeoutError, RuntimeError) as err:
            raise RayUnavailable(f"cannot reach the Ray cluster at {self.where}: {_first_line(err)}") from err
        try:
            check_placement(self.spec, self.where)
            yield
        finally:
            stop_ray()

    def submitting(self, api_url: str) -> AbstractContextManager[None]:
        """Each task asks Ray for its share, so GPU nodes take the scoring and nothing else; it reports its task run
        to this flow's Prefect API (without PREFECT_API_URL a worker would start a server of its own)."""
        from prefect import get_run_logger
        from prefect_ray.context import remote_options

        host = urlparse(api_url).hostname
        if self.spec.address not in (None, "auto", "local") and host in ("127.0.0.1", "localhost", "::1"):
            get_run_logger().warning(
                "Ray workers on other hosts cannot reach this flow's Prefect API at %s: run `prefect server start "
                "--host 0.0.0.0` on the head and set PREFECT_API_URL=http://HEAD:4200/api (docs/scaling.md)",
                api_url,
            )
        return remote_options(**ray_remote_options(self.spec, api_url))

    def cancel(self, futures: list) -> None:
        """Stop the Ray tasks still in flight (force: a scoring task is pure compute, nothing to clean up)."""
        import ray

        if futures and ray.is_initialized():
            for future in futures:
                try:
                    ray.cancel(future.wrapped_future, force=True)
                except Exception as err:  # a lost cluster: its tasks died with it
                    log.warning("could not cancel Ray task %s: %s", future.task_run_id, _first_line(err))

    def lost(self, err: BaseException) -> RayUnavailable | None:
        """A failed shard because the cluster is gone, as one line naming it; None if the cluster still answers."""
        if answers(PROBE_S):
            return None
        return RayUnavailable(  # what Ray raised then (often an empty AssertionError) is in the log file
            f"lost the Ray cluster at {self.where}: its head stopped answering; the scores stored so far are kept, "
            "and a re-run scores only what is missing"
        )


def finished(executor: InProcess | OnRay, task, shard_args: Iterator[tuple], api_url: str) -> Iterator[list]:
    """Each shard's scores as it finishes, at most `executor.window` shards in flight."""
    pending: list = []

    def result(future) -> list:
        try:
            return future.result()
        except Exception as err:
            if (lost := executor.lost(err)) is not None:
                raise lost from err
            raise

    try:
        with executor.submitting(api_url):
            for args in shard_args:
                pending.append(task.submit(*args))
                if len(pending) >= executor.window:
                    done = next(as_completed(pending))
                    pending.remove(done)
                    yield result(done)
        while pending:
            done = next(as_completed(pending))
            pending.remove(done)
            yield result(done)
    finally:  # Ctrl-C, a lost cluster, a failed shard: what is still in flight is stopped, not left to run
        executor.cancel(pending)


def ray_remote_options(ray: RaySpec, api_url: str | None = None) -> dict:
    """Ray options for one scoring task: its GPU/CPU share, a long-lived worker, and the env it needs."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return {
        "num_gpus": ray.num_gpus_per_task,
        "num_cpus": ray.num_cpus_per_task,
        # Ray ends a GPU task's worker after each call by default (max_calls=1): the model would be loaded
        # again for every shard. 0 = unlimited, so the lru_cache in rsr.stages.score keeps one model per worker.
        "max_calls": 0,
        # Merged with the job's runtime_env (its py_modules stay).
        "runtime_env": {"env_vars": env},
    }


@contextmanager
def shipped_code(ray: RaySpec) -> Iterator[dict]:
    """ray.init arguments. A cluster's workers may run another checkout (or none): ours ships with the job (Ray
    `py_modules`), uploaded by ray.init, after which the copy made for it is removed: no folder is left per run.
    Dependencies (torch, transformers, prefect, the embedded student's wheel) come from the cluster's hosts."""
    quiet = {"configure_logging": False, "log_to_driver": False}  # Ray's lines go to the log file, not the terminal
    if ray.address is None:
        # A temporary local instance for this run: one model per CPU, at most 8. "local": never join a cluster
        # that `ray start` left running on this host (use "auto" for that). It imports the installed package.
        yield {"address": "local", "num_cpus": min(os.cpu_count() or 1, 8), "include_dashboard": False, **quiet}
        return
    # Ray names a shipped folder's module by the folder: tasks/ installs as rsr_tasks, so it ships as a copy so named.
    folder = Path(tempfile.mkdtemp(prefix="rsr-ray-"))
    try:
        shipped = folder / "rsr_tasks"
        shutil.copytree(Path(rsr_tasks.score.__file__).parent, shipped, ignore=shutil.ignore_patterns("__pycache__"))
        modules = [str(Path(rsr.metric.__file__).parent), str(shipped)]
        env = {"py_modules": modules, "excludes": ["__pycache__", "*.pyc"]}
        yield {"address": ray.address, "runtime_env": env, **quiet}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_placement(ray: RaySpec, where: str) -> None:
    """Refuse at once a share that no node of the cluster can give (it would wait for ever), naming what exists; an
    autoscaling cluster gets `wait_for_nodes_s` to add a node that fits."""
    import ray as ray_api

    deadline = time.monotonic() + ray.wait_for_nodes_s
    while True:
        nodes = [n.get("Resources", {}) for n in ray_api.nodes() if n.get("Alive")]
        need = {"GPU": ray.num_gpus_per_task, "CPU": ray.num_cpus_per_task}
        if any(all(n.get(k, 0) >= v for k, v in need.items()) for n in nodes):
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    best = ", ".join(f"{n.get('CPU', 0):g} CPU + {n.get('GPU', 0):g} GPU" for n in nodes) or "no live node"
    hint = "--ray-gpus-per-task 0 (ray.num_gpus_per_task: 0) to score on CPUs" if ray.num_gpus_per_task else ""
    waited = f" (waited {ray.wait_for_nodes_s:g}s)" if ray.wait_for_nodes_s else ""
    raise RayUnavailable(
        f"no node of {where} can run a scoring task{waited}: each asks {ray.num_cpus_per_task:g} CPU + "
        f"{ray.num_gpus_per_task:g} GPU, the nodes have {best}; give {hint or 'a smaller share'} or add a node "
        "that has it (docs/scaling.md)"
    )


def _imported_ray():  # noqa: ANN202 (ray is the optional extra `ray`)
    """Ray, made to leave this process's logging and Ray's start-up to us. Its own logger writes to the terminal:
    its records go where ours do (the log file of a command). And without RAY_ENABLE_AUTO_CONNECT=0, any Ray call
    after a lost connection starts a fresh local cluster (and writes ~/.ray/auth_token) behind our back."""
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")  # read when Ray is first imported
    import ray
    import ray._private.auto_init_hook

    ray._private.auto_init_hook.enable_auto_connect = False  # Ray imported before (a test): its copy of the switch
    ray_logger = logging.getLogger("ray")
    for handler in list(ray_logger.handlers):
        ray_logger.removeHandler(handler)
    ray_logger.propagate = True
    ray_logger.setLevel(logging.WARNING)
    # Ray's client keeps its log-stream logger to itself (propagate=False, no handler): Python would print its
    # "reconnecting" line on the terminal. What it says, the data channel's own lines already tell the log file.
    logging.getLogger("ray.util.client.logsclient").addHandler(logging.NullHandler())
    return ray


def answers(timeout_s: float) -> bool:
    """Whether the Ray cluster this process joined still answers, asked in a thread that may be left behind."""
    import ray

    if not ray.is_initialized():
        return False  # a Ray Client (ray://) whose connection is gone: nothing to ask
    box: list[bool] = []

    def ask() -> None:
        try:
            ray.nodes()
            box.append(True)
        except Exception:  # any failure to answer is the answer
            box.append(False)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(box and box[0])


def stop_ray() -> None:
    """Leave Ray: stop the local instance or disconnect from the cluster, without waiting on a dead head."""
    import ray

    thread = threading.Thread(target=ray.shutdown, daemon=True)
    thread.start()
    thread.join(STOP_S)
    if thread.is_alive():
        log.warning("ray.shutdown did not return within %.0fs: leaving it behind", STOP_S)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
