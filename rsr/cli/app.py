"""The `rsr` Typer app: each command module registers its commands on it."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Curate reasoning trajectories by RSR.")
