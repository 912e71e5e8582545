"""Event-driven deployments: the triggers' templates, serve built from prefect.yaml, and end to end on a real server.

The slow tests start a real `prefect server start` (SQLite in tmp, a free port on 127.0.0.1), then either run
`rsr serve` and send `rsr.teacher.added` / `rsr.student.added` through `rsr add-teacher/add-student --async`, or
deploy deployments/prefect.yaml to a `gpu` process pool and run one flow with `prefect worker start --run-once`.
Every process is started in its own session and its group killed whatever happens; every wait has a deadline.
DuckDB has one writer (the flow-run process): the test opens it read-only, only after the runs have finished.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.support import servers

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "deployments" / "prefect.yaml"
N_PROBLEMS = 10
SERVER_START_S = servers.START_S
RUN_S = 420


# ---------------------------------------------------------------------------------------------------------------
# Fast: the trigger definitions themselves
# ---------------------------------------------------------------------------------------------------------------
def _render(parameters: dict, context: dict) -> dict:
    """Render deployment-trigger parameters the way the Prefect server's RunDeployment action does."""
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    params = copy.deepcopy(parameters)
    RunDeployment._upgrade_v1_templates(params)
    return hydrate(params, HydrationContext(render_jinja=True, jinja_context=context, raise_on_error=True))


def _event(name: str, resource: dict, payload: dict):
    from prefect.events import Event

    return Event(event=name, resource=resource, payload=payload)


def test_trigger_parameters_render_from_event_payloads():
    """Each trigger hands the flow its event's payload as JSON text, whatever the payload holds."""
    from rsr_deployments import events
    from rsr_deployments.serve import CURATE_PARAMETERS, RESCORE_PARAMETERS

    # The payloads `rsr add-teacher/add-student --async` send (rsr/cli.py).
    resource = {"prefect.resource.id": "rsr.teacher.t1", "prefect.resource.name": "t1"}
    payload = {"name": "t1", "file": "/data/t1.jsonl", "format": "messages", "mapping": None}
    payload |= {"problems": "/data/p.jsonl", "score": True, "publish": False, "hf_options": {"split": "train"}}
    got = _render(CURATE_PARAMETERS, {"event": _event(events.TEACHER_ADDED, resource, payload)})
    assert set(got) == {"event"} and json.loads(got["event"]) == payload
    minimal = {"name": "t2", "file": "x.parquet"}
    got = _render(CURATE_PARAMETERS, {"event": _event(events.TEACHER_ADDED, resource, minimal)})
    assert json.loads(got["event"]) == minimal

    resource = {"prefect.resource.id": "rsr.student.smollm2-135m", "prefect.resource.name": "smollm2-135m"}
    payload = {"ref": "smollm2-135m", "dtype": "float32", "chat_template": None}
    got = _render(RESCORE_PARAMETERS, {"event": _event(events.STUDENT_ADDED, resource, payload)})
    assert set(got) == {"event"} and json.loads(got["event"]) == payload


def test_a_template_object_in_a_payload_stays_text_through_both_hydrations():
    """Prefect hydrates a run's parameters twice (the trigger's action, then the run's creation, with workspace
    variables): a template object sent in a payload reaches the flow as the text it was, unresolved."""
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    from rsr_deployments import events
    from rsr_deployments.serve import CURATE_PARAMETERS

    secret = {"__prefect_kind": "workspace_variable", "variable_name": "token"}
    jinja = {"__prefect_kind": "jinja", "template": "{{ 7 * 6 }}"}
    payload = {"name": secret, "file": "/data/t.jsonl", "mapping": {"problem": jinja}}
    resource = {"prefect.resource.id": "rsr.teacher.t", "prefect.resource.name": "t"}
    got = _render(CURATE_PARAMETERS, {"event": _event(events.TEACHER_ADDED, resource, payload)})
    at_creation = HydrationContext(
        raise_on_error=True, render_jinja=True, render_workspace_variables=True, workspace_variables={"token": "s3"}
    )
    assert hydrate(got, at_creation) == got and json.loads(got["event"]) == payload
    assert "s3" not in got["event"] and "42" not in got["event"]


def test_prefect_yaml_declares_the_served_deployments(tmp_path):
    from prefect.events import DeploymentEventTrigger
    from prefect.flows import load_flow_from_entrypoint

    from rsr.settings import StateDir
    from rsr_deployments.serve import DEFAULT_RESCORE_CRON, build_deployments, triggers

    spec = yaml.safe_load(PREFECT_YAML.read_text())
    declared = {d["name"]: d for d in spec["deployments"]}
    served = {d.name: d for d in build_deployments(StateDir(tmp_path))}
    assert set(declared) == set(served) == set(triggers()) | {"publish"}
    for name, d in declared.items():
        assert d["work_pool"]["name"] == "gpu"
        assert d["work_pool"]["job_variables"]["env"]["RSR_HOME"] == "{{ $RSR_HOME }}"
        assert load_flow_from_entrypoint(d["entrypoint"]).name == served[name].flow_name
        assert served[name].parameters["state"] == str(tmp_path)
        yaml_triggers = [DeploymentEventTrigger.model_validate(t).model_dump() for t in d.get("triggers", [])]
        assert yaml_triggers == [t.model_dump() for t in triggers().get(name, [])], name
        assert served[name].schedules is None and "rsr-serve" in served[name].tags  # schedules: the server's
    assert [s["cron"] for s in declared["rescore-students"]["schedules"]] == [DEFAULT_RESCORE_CRON]
    assert "triggers" not in declared["publish"]  # the rescore flows publish for each student they re-scored


def test_schedules_set_through_prefect_survive_a_restart_of_serve(tmp_path):
    """`rsr serve` registers its deployments again at each start: a schedule added with `prefect deployment schedule
    create` (or the UI) stays; --rescore-cron sets or removes only rsr's own (its slug). On the session's server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import CronSchedule

    from rsr.settings import StateDir
    from rsr_deployments.serve import NIGHTLY, build_deployments, nightly_schedule

    def start_serve(cron: str | None) -> tuple:  # what `rsr serve` does with its deployments at start
        (rescore,) = [d for d in build_deployments(StateDir(tmp_path)) if d.name == "rescore-students"]
        rescore.name = f"rescore-students-{tmp_path.name}"[:60]  # this test's own deployment on the shared server
        with get_client(sync_client=True) as client:
            new = not [d for d in client.read_deployments() if d.name == rescore.name]
            deployment_id = rescore.apply()
            said = nightly_schedule(client, deployment_id, cron, "UTC", new)
            crons = sorted((s.slug or "", s.schedule.cron) for s in client.read_deployment_schedules(deployment_id))
        return deployment_id, said, crons

    deployment_id, said, crons = start_serve(None)
    assert (said, crons) == ("nightly rescore at 0 2 * * * (UTC)", [(NIGHTLY, "0 2 * * *")])  # a new deployment
    with get_client(sync_client=True) as client:  # as `prefect deployment schedule create ... --cron "30 4 * * *"`
        client.create_deployment_schedules(deployment_id, [(CronSchedule(cron="30 4 * * *"), True)])
    theirs = ("", "30 4 * * *")
    kept = "the schedules on the server are kept"
    assert start_serve(None) == (deployment_id, kept, [theirs, (NIGHTLY, "0 2 * * *")])
    assert start_serve("15 1 * * *")[2] == [theirs, (NIGHTLY, "15 1 * * *")]
    assert start_serve(None)[2] == [theirs, (NIGHTLY, "15 1 * * *")]
    assert start_serve("")[2] == [theirs]


def test_async_needs_a_prefect_server():
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from rsr.cli import app

    runner = CliRunner()
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = runner.invoke(app, ["add-student", "smollm2-135m", "--async"])
    assert result.exit_code == 2
    assert "PREFECT_API_URL is unset" in result.output and "prefect server start" in result.output
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{servers.free_port()}/api"}):
        result = runner.invoke(app, ["add-teacher", "t", "x.jsonl", "--async"])
    assert result.exit_code == 2 and "does not answer" in result.output


# ---------------------------------------------------------------------------------------------------------------
# Slow: a real server, `rsr serve`, `prefect deploy` + a process worker
# ---------------------------------------------------------------------------------------------------------------
class Server:
    def __init__(self, url: str, tmp: Path):
        self.url = url
        self.tmp = tmp

    def env(self, name: str, **extra: str) -> dict:
        """Environment for a client process of this server, with its own PREFECT_HOME."""
        return servers.base_env(self.tmp / f"{name}-prefect", self.url) | extra

    def client(self):
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.url)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("prefect-server")
    with servers.prefect_server(tmp) as url:
        yield Server(url, tmp)


def _data(tmp: Path) -> Path:
    """The one folder the deployment runs may read (RSR_DATA_ROOTS)."""
    return tmp / "data"


def _demo(tmp: Path) -> tuple[Path, Path]:
    """The first N_PROBLEMS of one demo teacher (all correct), and the problems file with gold answers, both under
    the data root."""
    from rsr.demo import write_demo_data

    folder = _data(tmp) / "demo"
    write_demo_data(folder)
    teacher = _data(tmp) / "careful-tutor.jsonl"
    lines = (folder / "careful-tutor.jsonl").read_text().splitlines()[:N_PROBLEMS]
    teacher.write_text("\n".join(lines) + "\n")
    return teacher, folder / "problems.jsonl"


def _rsr(args: list[str], env: dict, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rsr.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"rsr {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _deployment_runs(server: Server, flow: str, deployment: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowFilter, FlowFilterName

    with server.client() as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
        )


def _wait_final(server: Server, flow: str, deployment: str, log: Path, n: int = 1, timeout_s: float = RUN_S):
    """Wait until `n` runs of the deployment exist and all have finished; fail at once on a failed one."""

    def finished():
        runs = _deployment_runs(server, flow, deployment)
        for run in runs:
            if run.state and run.state.is_final() and not run.state.is_completed():
                pytest.fail(f"{flow}/{deployment} run {run.name} ended {run.state.name}\n{servers.tail(log, 120)}")
        started = [r for r in runs if r.state and not r.state.is_scheduled()]
        if len(started) >= n and all(r.state.is_completed() for r in started):
            return started
        return None

    return servers.until(f"{n} completed run(s) of {flow}/{deployment}", finished, timeout_s, log)


@pytest.fixture
def served(prefect_server: Server, tmp_path) -> Iterator[tuple[Server, Path, Path, dict]]:
    """`rsr serve` on a fresh RSR_HOME, its deployments and automations registered; stopped afterwards."""
    from prefect.exceptions import ObjectNotFound

    home = tmp_path / "rsr-home"
    env = prefect_server.env("serve", RSR_HOME=str(home), PREFECT_RUNNER_POLL_FREQUENCY="1")
    env |= {"RSR_DATA_ROOTS": str(_data(tmp_path)), "RSR_HUB_ALLOW": "team-a"}
    log = tmp_path / "serve.log"
    # A cron that will not fire during the test (the schedule itself is checked on the deployment).
    proc = servers.start([sys.executable, "-m", "rsr.cli", "serve", "--rescore-cron", "0 0 1 1 *"], env, log, tmp_path)
    try:

        def registered() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"rsr serve exited ({proc.returncode})\n{servers.tail(log)}")
            with prefect_server.client() as client:
                names = {a.name for a in client.read_automations()}
                try:  # registered by *this* serve (the module's server keeps an earlier test's deployments)
                    state = client.read_deployment_by_name("curate-teacher/curate-teacher").parameters.get("state")
                except ObjectNotFound:
                    return False
            return {"rsr-teacher-added", "rsr-student-added"} <= names and state == str(home.resolve())

        servers.until("rsr serve to register its deployments", registered, SERVER_START_S, log)
        yield prefect_server, home, log, prefect_server.env("client", RSR_HOME=str(tmp_path / "client-home"))
    finally:
        servers.stop(proc)


@pytest.mark.slow
def test_serve_runs_flows_on_events(served, tmp_path):
    from rsr.store.queries import Reader

    server, home, log, client_env = served
    teacher, problems = _demo(tmp_path)

    with server.client() as client:
        rescore = client.read_deployment_by_name("rescore-students/rescore-students")
    assert [s.schedule.cron for s in rescore.schedules] == ["0 0 1 1 *"]
    assert rescore.parameters["state"] == str(home.resolve())

    # rsr.teacher.added -> curate-teacher: ingest, dedup, verify, score for the default student.
    out = _rsr(
        ["add-teacher", "careful-tutor", str(teacher), "--format", "messages", "--problems", str(problems), "--async"],
        client_env,
        tmp_path,
    )
    assert "emitted rsr.teacher.added" in out
    (run,) = _wait_final(server, "curate-teacher", "curate-teacher", log)
    assert json.loads(run.parameters["event"])["file"] == str(teacher.resolve())
    with Reader.open(home / "rsr.duckdb") as store:
        _, rows = store.query(
            """SELECT count(*), count(v.trajectory_id), count(s.trajectory_id) FROM trajectories t
               LEFT JOIN verdicts v USING (trajectory_id) LEFT JOIN scores s USING (trajectory_id)
               WHERE t.teacher = 'careful-tutor'"""
        )
        assert rows == [(N_PROBLEMS, N_PROBLEMS, N_PROBLEMS)]
        (first,) = store.students()
        _, runs = store.query("SELECT flow_name, status, prefect_flow_run_id FROM runs")
        assert ("curate-teacher", "completed", str(run.id)) in runs

    # rsr.student.added -> rescore-students for that student (another template: another student_id), which then
    # publishes for it (its dataset named by student) under its policy.
    out = _rsr(["add-student", "smollm2-135m", "--chat-template", "llama3", "--async"], client_env, tmp_path)
    assert "emitted rsr.student.added" in out
    (rescored,) = _wait_final(server, "rescore-students", "rescore-students", log)
    assert json.loads(rescored.parameters["event"])["chat_template"] == "llama3"
    with Reader.open(home / "rsr.duckdb") as store:
        (new,) = [s for s in store.students() if s.student_id != first.student_id]
        assert new.info["chat_template"] == "llama3"
        _, scored = store.query("SELECT count(*) FROM scores WHERE student_id = ?", [new.student_id])
        assert scored == [(N_PROBLEMS,)]
        _, pubs = store.query("SELECT student_id, name, n_rows FROM publications")
        assert pubs == [(new.student_id, "sft-smollm2-135m-llama3", N_PROBLEMS)]

    # rsr.teacher.added with publish: true -> curate scores the new teacher for both students, publishes for both.
    terse = _data(tmp_path) / "terse-solver.jsonl"
    terse.write_text("\n".join((_data(tmp_path) / "demo" / "terse-solver.jsonl").read_text().splitlines()[:N_PROBLEMS]))
    args = ["add-teacher", "terse-solver", str(terse), "--format", "messages", "--problems", str(problems)]
    assert "emitted rsr.teacher.added" in _rsr([*args, "--publish", "--async"], client_env, tmp_path)
    _wait_final(server, "curate-teacher", "curate-teacher", log, n=2)
    with Reader.open(home / "rsr.duckdb") as store:
        _, pubs = store.query("SELECT DISTINCT name, student_id FROM publications ORDER BY name")
    assert pubs == [("sft-smollm2-135m", first.student_id), ("sft-smollm2-135m-llama3", new.student_id)]


def _deploy_to_the_gpu_pool(server: Server, home: Path, tmp_path: Path) -> None:
    """A `gpu` process pool, `prefect deploy --all` of deployments/prefect.yaml; its deployments and automations."""
    from prefect.client.schemas.actions import WorkPoolCreate

    with server.client() as client:
        client.create_work_pool(WorkPoolCreate(name="gpu", type="process"))
    env = server.env("deploy", RSR_HOME=str(home))
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_YAML)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with server.client() as client:
        for name in ("curate-teacher/curate-teacher", "rescore-students/rescore-students", "publish-dataset/publish"):
            d = client.read_deployment_by_name(name)
            assert d.work_pool_name == "gpu" and d.job_variables == {"env": {"RSR_HOME": str(home)}}, name
        names = {a.name for a in client.read_automations()}
    assert {"rsr-teacher-added", "rsr-student-added"} <= names


def _run_once_in_the_gpu_pool(server: Server, log: Path, tmp_path: Path) -> None:
    """Wait for the triggered run to be scheduled, then let one process worker of the pool execute it."""
    servers.until(
        "the triggered run in the gpu pool",
        lambda: [r for r in _deployment_runs(server, "curate-teacher", "curate-teacher") if r.state.is_scheduled()],
        servers.START_S,
    )
    worker = servers.start(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "gpu", "--run-once"],
        server.env("worker", RSR_DATA_ROOTS=str(_data(tmp_path))),  # the worker's environment is its runs' own
        log,
        tmp_path,
    )
    try:
        worker.wait(timeout=RUN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not finish in {RUN_S}s\n{servers.tail(log)}")
    finally:
        servers.stop(worker)


@pytest.mark.slow
def test_prefect_yaml_deploys_to_the_gpu_pool(prefect_server: Server, tmp_path):
    """`prefect deploy` of deployments/prefect.yaml, then one triggered run executed by a process worker."""
    from rsr.store.queries import Reader

    server = prefect_server
    home = tmp_path / "gpu-home"
    teacher, problems = _demo(tmp_path)
    _deploy_to_the_gpu_pool(server, home, tmp_path)

    out = _rsr(
        ["add-teacher", "tutor", str(teacher), "--format", "messages", "--problems", str(problems), "--no-score"]
        + ["--async"],
        server.env("client"),
        tmp_path,
    )
    assert "emitted rsr.teacher.added" in out
    log = tmp_path / "worker.log"
    _run_once_in_the_gpu_pool(server, log, tmp_path)
    (run,) = [
        r
        for r in _deployment_runs(server, "curate-teacher", "curate-teacher")
        if json.loads(r.parameters["event"])["name"] == "tutor"
    ]
    assert run.state.is_completed(), servers.tail(log)
    with Reader.open(home / "rsr.duckdb") as store:
        _, rows = store.query(
            """SELECT count(*), count(v.trajectory_id) FROM trajectories t LEFT JOIN verdicts v USING (trajectory_id)
               WHERE t.teacher = 'tutor'"""
        )
    assert rows == [(N_PROBLEMS, N_PROBLEMS)]


def _emit_all(payloads: list[dict], env: dict, cwd: Path) -> None:
    """rsr.teacher.added with each payload as given, sent from a client process (as `prefect event emit` would)."""
    script = (
        "import json, sys\nfrom rsr_deployments.events import emit\n"
        "for p in json.loads(sys.argv[1]): emit('rsr.teacher.added', p['name'] if isinstance(p['name'], str) "
        "else 'x', p)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(payloads)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _failure(server: Server, run) -> str:
    """A failed run's reason: its state's message, and its logs (Prefect's runner, seeing the run's process exit 1,
    may report the run Crashed over the Failed state the flow set, on a loaded machine)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    assert run.state.is_failed() or run.state.is_crashed(), run.state
    with server.client() as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    return "\n".join([run.state.message or "", *(log.message for log in logs)])


@pytest.mark.slow
def test_events_read_only_the_data(served, tmp_path):
    """/etc/passwd, a symlink out of the roots, a hub id not allowed and a Prefect template object: each run fails
    with its reason before reading a byte (the store holds none of them); a file inside the roots is curated."""
    from prefect.client.schemas.actions import VariableCreate

    from rsr.store.queries import Reader

    server, home, log, client_env = served
    teacher, problems = _demo(tmp_path)
    secret = tmp_path / "outside.jsonl"  # a valid teacher file, but outside the data root
    secret.write_text(teacher.read_text())
    (_data(tmp_path) / "link.jsonl").symlink_to(secret)
    with server.client() as client:
        client.create_variable(VariableCreate(name="token", value="s3cret-value"))
    variable = {"__prefect_kind": "workspace_variable", "variable_name": "token"}
    refused = {
        "passwd": ({"file": "/etc/passwd", "format": "table"}, "'/etc/passwd' is outside the data roots"),
        "symlink": ({"file": str(_data(tmp_path) / "link.jsonl")}, "link.jsonl' is outside the data roots"),
        "hub": ({"file": "evil-org/stolen", "format": "hf"}, "'evil-org/stolen' is not in the allowed hub ids"),
        "template": ({"file": str(teacher), "mapping": {"problem": variable}}, "Prefect template object"),
    }
    payloads = [{"name": name, **p, "score": False} for name, (p, _) in refused.items()]
    payloads.append({"name": "careful-tutor", "file": str(teacher), "problems": str(problems), "score": False})
    since = datetime.now(UTC)  # the module's server also holds the runs of the tests before this one
    _emit_all(payloads, client_env, tmp_path)

    def all_final():
        runs = [r for r in _deployment_runs(server, "curate-teacher", "curate-teacher") if r.created >= since]
        return runs if len(runs) == len(payloads) and all(r.state.is_final() for r in runs) else None

    runs = servers.until("every run to finish", all_final, RUN_S, log)
    by_name = {json.loads(r.parameters["event"])["name"]: r for r in runs}
    assert by_name["careful-tutor"].state.is_completed(), servers.tail(log)
    for name, (_, reason) in refused.items():
        assert reason in _failure(server, by_name[name]), name
    assert all("s3cret" not in json.dumps(r.parameters) for r in runs)
    with Reader.open(home / "rsr.duckdb") as store:
        _, teachers = store.query("SELECT teacher, count(*) FROM trajectories GROUP BY teacher")
        _, quarantined = store.query("SELECT count(*) FROM quarantine")
        _, recorded = store.query("SELECT flow_name, status FROM runs")
    assert teachers == [("careful-tutor", N_PROBLEMS)] and quarantined == [(0,)]
    assert recorded == [("curate-teacher", "completed")]  # the refused runs never opened the store
