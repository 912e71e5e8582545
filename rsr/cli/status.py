"""`rsr status`: what the state folder holds, read-only (a snapshot while a flow writes)."""

from __future__ import annotations

import typer

from rsr.cli.app import app
from rsr.cli.options import StateOpt, state


def console():  # noqa: ANN201 (rich is imported lazily: `rsr --help` stays fast)
    """Rich output that never cuts a name, number or command: a terminal folds long cells and lets lines run on
    (soft wrap, so a printed command is still one line when copied); a log or pipe gets whole lines, not 80 columns."""
    from rich.console import Console

    out = Console(soft_wrap=True)
    return out if out.is_terminal else Console(soft_wrap=True, width=160)


def _teacher_table(store, registration):  # noqa: ANN202 (rich is imported lazily)
    """The status board of one student, whether any dataset RSR on it rests on a subset, and whether RSR goes with
    length for some teacher (|Spearman| >= 0.3)."""
    import pandas as pd
    from rich.table import Table
    from rich.text import Text

    from rsr.report.page import LENGTH_TIED, order_note, teacher_board

    title = f"teachers for student {registration.label} ({registration.student_id}), lowest dataset RSR first"
    # Text, not a markup string: a label's "[template.jinja]" or a teacher named "[b]x" is shown as typed
    table = Table(title=Text(title), box=None, title_justify="left", pad_edge=False, header_style="bold underline")
    board = teacher_board(store, registration.student_id).to_dict("records")
    # "scored" is scored of ingested; failed, truncated, dropped tool calls and contaminated (holding a benchmark
    # problem: not scored by default) get a column when any teacher has some.
    columns = ("n_failed", "n_truncated", "n_dropped_tool_calls", "n_contaminated")
    extra = [c for c in columns if any(r[c] for r in board)]
    # Whether each teacher's place above the next is settled; RSR~length only where it matters.
    order = [order_note(r["ahead_share"], r["settled"]) for r in board]
    tied = any(abs(r["rsr_length_spearman"]) >= LENGTH_TIED for r in board if pd.notna(r["rsr_length_spearman"]))
    evidence = (*(["above next"] if any(order) else []), *(["RSR~length"] if tied else []))
    headers = ("rank", "teacher", "scored", *(c[2:] for c in extra), "accuracy", "dataset RSR", "95% interval",
               *evidence)  # fmt: skip
    for col in (*headers, "selected"):  # a long name folds onto a second line; no number is ever cut
        wrap = col == "teacher"
        table.add_column(col, justify="left" if wrap else "right", overflow="fold", no_wrap=not wrap)
    subset = False
    for r, holds in zip(board, order, strict=True):
        scored = pd.notna(r["dataset_rsr"])
        subset |= bool(scored and r["on_subset"])
        rho = f"{r['rsr_length_spearman']:+.2f}" if pd.notna(r["rsr_length_spearman"]) else "-"
        table.add_row(
            f"{r['rank']:.0f}" if scored else "-",
            Text(r["teacher"]),
            f"{r['n_scored']}/{r['n_trajectories']}",
            *(str(r[c]) for c in extra),
            f"{r['all_accuracy']:.1%}" if r["all_accuracy"] is not None else "-",
            (f"{r['dataset_rsr']:.3f}" + (f" on {r['n']}*" if r["on_subset"] else "")) if scored else "-",
            f"{r['ci_low']:.3f}-{r['ci_high']:.3f}" if scored else "-",
            *([holds or "-"] if any(order) else []),
            *([rho] if tied else []),
            str(r["selected"]),
        )
    return table, subset, tied


@app.command()
def status(state_folder: StateOpt = None) -> None:
    """What the state folder holds: teachers, students, scores."""
    home = state(state_folder, writes=False)
    if not home.duckdb.exists():
        typer.echo(f"{home.duckdb} does not exist yet: run `rsr demo` or `rsr add-teacher`")
        return
    from rsr.store.queries import Reader

    out = console()
    # Read-only (a snapshot while a flow writes): never a lock error, and never in the way of a writing flow.
    with Reader.open(home.duckdb) as store:
        for registration in store.students():
            table, subset, tied = _teacher_table(store, registration)
            out.print(table)
            if tied:
                out.print(
                    "  RSR~length: Spearman of trajectory RSR and response tokens; from |0.3| a selection by RSR "
                    "partly picks by length: compare it with `rsr publish --baseline random` (the same tokens)"
                )
            if subset:
                out.print(
                    "  * dataset RSR on a subset: failed, truncated, contaminated or unscored trajectories left out "
                    '(rsr sql "SELECT * FROM teacher_coverage"; failed ones: SELECT error FROM score_history)'
                )
            for setting in store.score_settings(registration.student_id):
                k = setting.key
                out.print(
                    f"  scores in {k.dtype}, max_tokens {k.max_tokens}: {setting.n_scored}, of which "
                    f"{setting.n_truncated} truncated (left out of selection unless --include-truncated)"
                )
        n_quarantined, pub = store.n_quarantined(), store.latest_publication()
        benchmarks, found = store.benchmarks(), store.contamination_counts()
    out.print(f"quarantined records: {n_quarantined} (rsr sql: SELECT * FROM quarantine)")
    for b in benchmarks:  # what every trajectory is checked against (rsr add-benchmark)
        pinned = f" at {b.revision[:12]}" if b.revision else ""
        out.print(f"benchmark {b.name}: {b.n_problems} problems from {b.source}{pinned}, digest {b.digest[:12]}, "
                  f"added {b.added_at:%Y-%m-%d %H:%M}; trajectories holding one: {found[b.name][0]} "
                  f"(rsr sql: SELECT * FROM contamination_log)")  # fmt: skip
    if pub:
        out.print(f"dataset:  {pub['path']}  ({pub['n_rows']} rows; datasets.load_from_disk)")
        out.print(f"MLflow run {pub['mlflow_run_id']}")
    out.print(f"DuckDB:   {home.duckdb}")
    out.print(f"MLflow:   {home.mlflow_uri}")
    out.print(f"  open the UI:  mlflow ui --backend-store-uri {home.mlflow_uri}")
    out.print(f"Prefect:  PREFECT_HOME={home.prefect_home}")
    out.print(f"  open the UI:  PREFECT_HOME={home.prefect_home} prefect server start")
