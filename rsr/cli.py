"""The `rsr` command. The one file in rsr/ that reaches up to flows/ and deployments/, lazily inside commands."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Curate reasoning trajectories by RSR.")


@app.callback()
def _root() -> None:
    """Curate reasoning trajectories by Rank-Surprisal Ratio (lower is better) for a given student."""


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def score(
    input: Annotated[Path, typer.Argument(help="JSONL or Parquet: one record per trajectory with `messages`, `id`")],
    out: Annotated[Path, typer.Option("--out", help="JSONL, one line per input record, in input order")],
    student: Annotated[str, typer.Option(help="smollm2-135m, gemma3-270m, a model folder or a hub id")] = "smollm2-135m",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    max_tokens: Annotated[int | None, typer.Option(help="score the first N tokens (default: the context)")] = None,
    batch_tokens: Annotated[int, typer.Option(help="padded tokens per forward batch")] = 8192,
    chat_template: Annotated[str | None, typer.Option(help="chatml | llama3 | a Jinja file")] = None,
) -> None:
    """Score trajectories with a student: per-record RSR statistics, then the dataset RSR."""
    from rsr.score_io import output_row, read_score_input, summary
    from rsr.student import Student

    try:
        items = read_score_input(input)
        st = Student.load(student, dtype=dtype, device=device, chat_template=chat_template)
    except (FileNotFoundError, ValueError, OSError) as err:
        _fail(str(err))
    if st.chat_template is None:
        _fail(f"student {student!r} has no chat template: pass --chat-template chatml|llama3|FILE.jinja")
    typer.echo(f"student {st.student_id} ({st.info()['dtype']} on {st.device}); {len(items)} records", err=True)
    started = time.perf_counter()
    scorable = [it for it in items if it.error is None]
    results = st.score([it.messages for it in scorable], max_tokens=max_tokens, batch_tokens=batch_tokens)
    by_line = {it.line: r for it, r in zip(scorable, results, strict=True)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps(output_row(it, by_line.get(it.line))) + "\n")
    n_ok, _, ds_rsr = summary(results)
    n_bad = len(items) - n_ok
    tokens = sum(r.stats.n_tokens for r in results if r.stats)
    elapsed = time.perf_counter() - started
    typer.echo(f"scored {n_ok} trajectories ({tokens} response tokens, {tokens / max(elapsed, 1e-9):.0f} tok/s)")
    if n_bad:
        typer.echo(f"{n_bad} records not scored: see `error` in {out}")
    typer.echo(f"dataset RSR: {ds_rsr:.4f}")


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
