"""What several commands share: their options (one student option set for every command that names a student),
the choices, and how an option's text becomes a value (a state folder, a student spec, a mapping)."""

from __future__ import annotations

import json
import logging
import os
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from rsr.cli.errors import LOG, check_writable, fail, log_to, user_errors

if TYPE_CHECKING:
    from rsr.config import RaySpec
    from rsr.settings import StateDir
    from rsr.spec import StudentSpec

# The CLI's choices (each member's value is its name). Dtype auto: bfloat16 on AMX CPUs and CUDA, else float32.
Dtype = StrEnum("Dtype", ["auto", "float32", "bfloat16"])
Format = StrEnum("Format", ["messages", "sharegpt", "generations", "zeroeval", "table", "hf"])
Policy = StrEnum("Policy", ["per_problem_min_rsr", "top_teachers", "rsr_threshold"])
OutputFormat = StrEnum("OutputFormat", ["table", "csv", "json"])
Metric = StrEnum("Metric", ["rsr", "mean_surprisal", "mean_entropy", "length"])  # rsr.select.METRICS
BaselineKind = StrEnum("BaselineKind", ["random"])
FormatOpt = Annotated[
    Format | None,
    typer.Option(
        "--format", metavar="FMT", help="messages | sharegpt | generations | zeroeval | table | hf (default: detected)"
    ),
]
MAP_PAIRS = {"allow_extra_args": True}  # --map a=b c=d: the pairs after the first reach the command as extra args
MAP_HELP = (
    "FIELD=COLUMN ... (several pairs, or repeat --map): problem, response, reasoning, answer, correctness, teacher, "
    "id, system, problem_id, messages, prompt, tools; COLUMN may be a dotted path (info.reference_answer, "
    "messages.0.info.x); a list column gives one trajectory per element (docs/formats.md)"
)
MapOpt = Annotated[list[str] | None, typer.Option("--map", metavar="FIELD=COLUMN", help=MAP_HELP)]

# ---- the student option set: every command that names a student takes these (docs/students.md) ------------
STUDENT_HELP = "a student_id, or a model: smollm2-135m, gemma3-270m, a model folder, a hub id"
StudentOpt = Annotated[str, typer.Option("--student", metavar="REF|ID", help=STUDENT_HELP)]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", metavar="REV", help="a hub model's branch, tag or commit")
]
ChatTemplateOpt = Annotated[
    str | None, typer.Option("--chat-template", metavar="NAME|FILE", help="chatml | llama3 | a Jinja file")
]
TemplateKwargsOpt = Annotated[
    str | None,
    typer.Option(
        "--chat-template-kwargs",
        metavar="JSON",
        help="the template's options, as vLLM's (e.g. '{\"enable_thinking\": true}'); part of the student's id",
    ),
]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", metavar="DTYPE", help="auto | float32 | bfloat16 (the body's)")]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEV", help="auto | cpu | cuda[:N]")]

# ---- the DAG's options ---------------------------------------------------------------------------------------
ContaminatedOpt = Annotated[
    bool,
    typer.Option(
        "--include-contaminated",
        help="let trajectories that hold a registered benchmark's problem in (left out by default)",
    ),
]
StateOpt = Annotated[
    str | None, typer.Option("--state", metavar="DIR", help="state folder (default: $RSR_HOME or ./.rsr)")
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="ADDR",
        help="score on Ray: ray://HEAD:10001, auto (a cluster on this host) or local (a fresh instance); "
        "overrides the YAML's ray.address (docs/scaling.md)",
    ),
]
RayGpusOpt = Annotated[
    float | None,
    typer.Option(
        "--ray-gpus-per-task",
        min=0,
        metavar="N",
        help="GPUs each scoring task asks of a Ray node (default 1, or the YAML's ray.num_gpus_per_task); "
        "0 scores on CPUs, 0.5 puts two tasks on one GPU",
    ),
]
RayCpusOpt = Annotated[
    float | None,
    typer.Option(
        "--ray-cpus-per-task", min=0, metavar="N", help="CPUs each scoring task asks (default 1, or the YAML's)"
    ),
]
MlflowOpt = Annotated[
    str | None,
    typer.Option(
        "--mlflow-uri",
        metavar="URI",
        help="MLflow tracking server for the publish run (default: the config's mlflow_uri, $MLFLOW_TRACKING_URI, "
        "then the state folder's SQLite store)",
    ),
]


def student_spec(
    student: str,
    revision: str | None = None,
    chat_template: str | None = None,
    chat_template_kwargs: str | None = None,
    dtype: Dtype = Dtype.auto,
    device: str = "auto",
) -> StudentSpec:
    """The student options as one spec, parsed once: a template file is read now (from this folder), so the spec
    means the same wherever a flow later runs."""
    from rsr.spec import StudentSpec

    options = template_kwargs(chat_template_kwargs)
    with user_errors(ValueError, OSError):
        spec = StudentSpec(ref=student, revision=revision, chat_template=chat_template, chat_template_kwargs=options,
                           dtype=dtype.value, device=device)  # fmt: skip
        return spec.resolved()


def template_kwargs(text: str | None) -> dict | None:
    """--chat-template-kwargs JSON: a JSON object ('{}': no options, said explicitly), or a clear error."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        fail(f"--chat-template-kwargs: not JSON ({err}): {text!r}")
    if not isinstance(value, dict):
        fail(f"--chat-template-kwargs: a JSON object is needed, e.g. '{{\"enable_thinking\": true}}', not {text!r}")
    return value


def mapping(pairs: list[str] | None, extra: list[str] | None = None) -> dict[str, str] | None:
    """--map FIELD=COLUMN ...: several pairs after one flag (the README's form; click leaves the pairs after the
    first as extra arguments) and repeated flags; checked by the ingest's own parser before anything runs."""
    extra = list(extra or [])
    if extra and (not pairs or any("=" not in e for e in extra)):
        stray = [e for e in extra if "=" not in e] or extra
        fail(f"unexpected argument(s) {' '.join(stray)}: only --map takes several FIELD=COLUMN pairs")
    if not pairs:
        return None
    from rsr.curate.ingest import explicit_pairs, make_plan

    try:
        make_plan("table", [], [*pairs, *extra])  # the whole check (two text fields in one column) before anything
        return explicit_pairs([*pairs, *extra])
    except ValueError as err:
        fail(f"--map: {err}")


def ray(
    address: str | None,
    gpus: float | None = None,
    cpus: float | None = None,
    run_async: bool = False,
    config: bool = False,
) -> RaySpec | None:
    """The --ray-* flags as the flows' `ray` parameter, holding only what was given (`rsr run` lays it over the
    YAML's `ray:`, so there a share alone is allowed; elsewhere a share needs --ray-address)."""
    given = {"address": address, "num_gpus_per_task": gpus, "num_cpus_per_task": cpus}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    if run_async:
        fail("--ray-* apply to a run in this process; with --async give them to `rsr serve`")
    if not address and not config:
        fail("--ray-gpus-per-task and --ray-cpus-per-task go with --ray-address (where the tasks run)")
    from rsr.config import RaySpec

    return RaySpec(**given)


# Our own progress and report are what a user reads; libraries' per-step bars and INFO lines are noise. Read by
# each library when it is imported (after state(): the commands import them lazily); `rsr serve`'s flow runs are
# subprocesses that inherit them.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


def state(folder: str | None, writes: bool = True, server: bool = True) -> StateDir:
    """The state folder, with its settings (and QUIET_ENV) in the environment. Under `rsr` (main), a command that
    `writes` checks the folder first and, with `server`, runs its flows on a Prefect server that dies with it."""
    from rsr.settings import StateDir, apply_env

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    home = StateDir.from_env(folder)
    shell = "main" in LOG and writes  # `rsr` at a shell: fatal conditions up front, logs to the state folder
    if shell:
        check_writable(home.root)
    apply_env(home)
    if shell and server and not os.environ.get("PREFECT_API_URL"):  # set before Prefect is imported
        from rsr_deployments.local_server import start

        (home.root / "logs").mkdir(exist_ok=True)
        timeout = float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])
        os.environ["PREFECT_API_URL"] = start(home.root / "logs" / f"prefect-server-{os.getpid()}.log", timeout)
    if shell and server:  # `rsr serve` keeps its runs' logs on its terminal: it is watched there
        log_to(home.root / "logs", configure_prefect=True)
    return home
