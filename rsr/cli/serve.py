"""`rsr serve`: the deployments served from this process, on a running Prefect server."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from rsr.cli.app import app
from rsr.cli.errors import user_errors
from rsr.cli.options import RayAddressOpt, StateOpt, ray, state


@app.command()
def serve(
    rescore_cron: Annotated[
        str, typer.Option(metavar="CRON", help='cron for the rescore of every registered student; "" disables')
    ] = "0 2 * * *",
    timezone: Annotated[str, typer.Option(metavar="TZ", help="time zone of --rescore-cron")] = "UTC",
    limit: Annotated[int, typer.Option(min=1, help="flow runs at a time (they share one DuckDB writer)")] = 1,
    state_folder: StateOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Serve the deployments on a Prefect server.

    Curate on rsr.teacher.added, rescore nightly and on rsr.student.added (then publish for each re-scored
    student), publish on demand."""
    ray_spec = ray(ray_address)
    home = state(state_folder, server=False)  # it needs the real server: PREFECT_API_URL
    from prefect import serve as prefect_serve

    from rsr.settings import DataScope
    from rsr_deployments.events import NoPrefectApi, require_api
    from rsr_deployments.serve import build_deployments

    with user_errors(NoPrefectApi):
        url = require_api()
    typer.echo(f"serving curate-teacher, rescore-students, publish for {home.root} from {url}", err=True)
    scope = DataScope.from_env(deployed=True)
    roots = os.pathsep.join(map(str, scope.roots or ())) or "nothing (set RSR_DATA_ROOTS)"
    hub = ", ".join(scope.hub_allow) or "none (RSR_HUB_ALLOW)"
    typer.echo(f"runs read only {roots} and hub ids {hub}: docs/deployments.md", err=True)
    # Each flow run is a subprocess, at most `limit` at a time, until interrupted.
    prefect_serve(*build_deployments(home, rescore_cron or None, timezone, ray_spec), limit=limit)
