"""The `rsr` Typer app: each command module registers its commands on it."""

from __future__ import annotations

import typer

# Click's plain help (no rich panels): it wraps to the terminal and never cuts an option's name at 80 columns.
app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None, help="Curate reasoning trajectories by RSR."
)
