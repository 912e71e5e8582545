"""`rsr serve`: the deployments served from this process, on a running Prefect server."""

from __future__ import annotations

import os
import time
from typing import Annotated

import typer

from rsr.cli.app import app
from rsr.cli.errors import LOG, user_errors
from rsr.cli.options import RayAddressOpt, RayCpusOpt, RayGpusOpt, StateOpt, ray, state


@app.command()
def serve(
    rescore_cron: Annotated[
        str | None,
        typer.Option(
            metavar="CRON",
            help='cron of rsr\'s nightly rescore of every registered student; "" removes it (default: keep the '
            "server's schedules; a new deployment gets prefect.yaml's 0 2 * * *)",
        ),
    ] = None,
    timezone: Annotated[str, typer.Option(metavar="TZ", help="time zone of --rescore-cron")] = "UTC",
    limit: Annotated[int, typer.Option(min=1, help="flow runs at a time (they share one DuckDB writer)")] = 1,
    state_folder: StateOpt = None,
    ray_address: RayAddressOpt = None,
    ray_gpus_per_task: RayGpusOpt = None,
    ray_cpus_per_task: RayCpusOpt = None,
) -> None:
    """Serve the deployments on a Prefect server.

    Curate on rsr.teacher.added, rescore nightly and on rsr.student.added (then publish for each re-scored
    student), publish on demand; a run whose process died is retried. Needs PREFECT_API_URL (a running `prefect
    server start`)."""
    ray_spec = ray(ray_address, ray_gpus_per_task, ray_cpus_per_task)
    home = state(state_folder, server=False)  # it needs the real server: PREFECT_API_URL
    from rsr_deployments.serve import Served, serve_log

    log = LOG["path"] = serve_log(home)  # before Prefect is imported: its logging reads it
    from rsr.settings import DataScope
    from rsr_deployments.events import NoPrefectApi, require_api
    from rsr_deployments.serve import serve as serve_forever

    with user_errors(NoPrefectApi):
        url = require_api()
    typer.echo(f"serving curate-teacher, rescore-students, publish for {home.root} from {url}", err=True)
    scope = DataScope.from_env(deployed=True)
    roots = os.pathsep.join(map(str, scope.roots or ())) or "nothing (set RSR_DATA_ROOTS)"
    hub = ", ".join(scope.hub_allow) or "none (RSR_HUB_ALLOW)"
    typer.echo(f"runs read only {roots} and hub ids {hub}: docs/deployments.md", err=True)
    typer.echo(f"each run's start and end below; tracebacks in {log}", err=True)

    def say(line: str) -> None:
        typer.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True)

    # Each flow run is a subprocess, at most `limit` at a time, until interrupted.
    serve_forever(home, Served(rescore_cron, timezone, limit, ray_spec), say)
