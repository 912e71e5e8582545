"""`rsr report`: PNG plots + one self-contained HTML page about the teachers for one student.

    build_report(StateDir.from_env(), "smollm2-135m", Path("report"))  # -> ReportResult(pngs, html, mlflow_run_id)

The teacher-selection table (``teacher_board``, also behind ``rsr status``): per teacher, for the student's
current scoring setting (dtype, max_tokens, r_max), the dataset RSR of the ``teacher_selection`` view with a
bootstrap 95% interval (trajectories resampled per teacher, seeded), whether its place above the next teacher
holds in >= 95% of paired resamples of problems (settled), how its trajectories' RSR goes with their length
(Spearman), accuracy, mean response length in tokens, and the paper's rule: teachers ranked by dataset RSR, lowest
first. The bootstraps are rsr/report/bootstrap.py.

Plots (``PLOTS``): matplotlib's object API with the Agg canvas: no pyplot global state, no display needed.
``report.html`` embeds the PNGs (base64, so the page works on its own) and links the files beside it. The files
are also logged to the MLflow run of the student's latest publication, under ``report/``.

The student is resolved from the ``students`` table by ref (most recent registration) or exact student_id; the
model is never loaded. The store is opened read-only, so a report works while a flow writes (from a snapshot).
"""

from __future__ import annotations

import base64
import os
import re
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rsr.metric import METRIC_VERSION, dataset_rsr_of_means
from rsr.report.bootstrap import N_RESAMPLES, SEED, SETTLED, bootstrap_ci, intervals, order_shares
from rsr.settings import StateDir
from rsr.spec import StudentSpec
from rsr.store.queries import Reader, ScoreKey

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from rsr.score.student import Student

HTML_TEMPLATE = Path(__file__).with_name("report.html")
__all__ = ["PNG_NAMES", "LENGTH_TIED", "ReportResult", "bootstrap_ci", "build_report", "teacher_board"]
LENGTH_TIED = 0.3  # |Spearman(RSR, length)| from which the board says a teacher's RSR goes with length


@dataclass
class ReportResult:
    pngs: list[Path]
    html: Path
    mlflow_run_id: str | None  # the run the files were logged to (None: no publication, or logging failed)
    student_id: str = ""
    warnings: list[str] = field(default_factory=list)
    pages: list[Path] = field(default_factory=list)  # explain pages (build_report's `explain_with`)


@dataclass
class _Data:
    student_id: str
    student_ref: str  # the student's label (ref, template, options): how plots name it
    others: list[str]  # the ref's other registrations, each with how to name it
    setting: ScoreKey | None  # the scoring setting the board is for (None: nothing scored yet)
    scores: pd.DataFrame  # the student's used rows in that setting: teacher, trajectory_id, rsr, surprisal_profile
    board: pd.DataFrame  # teacher_board
    publication: dict[str, Any] | None
    history: pd.DataFrame  # run_id, at, teacher, dataset_rsr
    note: str | None  # why a snapshot was read (None: the live file)


def teacher_board(reader: Reader, student_id: str, setting: ScoreKey | None = None) -> pd.DataFrame:
    """One row per known teacher, best first (the paper's rule: lowest dataset RSR first, unscored last):
    teacher, rank, dataset_rsr, n (rows used), accuracy (over those rows), mean_response_tokens, n_trajectories,
    all_accuracy (over all its trajectories), n_scored, n_failed, n_truncated, on_subset (n < n_trajectories),
    n_contaminated (holding a benchmark problem), selected (rows in the student's latest publication),
    rsr_length_spearman, the dataset RSR's interval ci_low, ci_high, and ahead_share / settled: how often its place
    above the next teacher holds in paired resamples of problems, and whether that is >= 95% (NaN / NA for the
    last). ``setting`` defaults to the student's current one."""
    setting = setting or reader.current_setting(student_id)
    pub = reader.latest_publication(student_id)
    board = reader.teacher_board(student_id, setting, pub["dataset_id"] if pub else None)
    used = reader.used_scores(student_id, setting)
    order = board.dropna(subset=["dataset_rsr"])["teacher"].tolist()
    board = board.merge(intervals(used), on="teacher", how="left")
    return board.merge(order_shares(used, order), on="teacher", how="left")


def _history(reader: Reader, student_id: str, setting: ScoreKey | None) -> pd.DataFrame:
    rows = reader.score_history(student_id, setting)
    # Cumulative, like latest_scores at that moment: a rescore run may cover only some trajectories.
    points = []
    for run_id, at in rows.groupby("run_id")["scored_at"].max().sort_values().items():
        latest = rows[rows["scored_at"] <= at].drop_duplicates("trajectory_id", keep="last")  # rows are in time order
        for teacher, g in latest.groupby("teacher"):
            points.append((run_id, at, teacher, dataset_rsr_of_means(g["mean_rank"], g["mean_surprisal"])))
    return pd.DataFrame(points, columns=["run_id", "at", "teacher", "dataset_rsr"])


def _load(state: StateDir, spec: StudentSpec) -> _Data:
    with Reader.open(state.duckdb) as reader:
        student = reader.find_student(spec)
        others = [r for r in reader.registrations() if r.ref == student.ref and r.student_id != student.student_id]
        setting = reader.current_setting(student.student_id)
        scores = reader.used_scores(student.student_id, setting, profile=True)
        board = teacher_board(reader, student.student_id, setting)
        history = _history(reader, student.student_id, setting)
        pub = reader.latest_publication(student.student_id)
        named = [o.naming() for o in others]
        return _Data(student.student_id, student.label, named, setting, scores, board, pub, history, reader.note)


# ---- plots --------------------------------------------------------------------------------------------------
# Each plot sets its title and draws on the axes, or returns why there is nothing to draw.


def _plot_selection(d: _Data, ax: Axes) -> str | None:
    ax.set_title(f"Teacher selection for {d.student_ref}: dataset RSR, 95% bootstrap interval")
    board = d.board.dropna(subset=["dataset_rsr"])
    if board.empty:
        return "no scores for this student yet"
    x = np.arange(len(board))
    rsr = board["dataset_rsr"].to_numpy(dtype=float)
    err = np.vstack([rsr - board["ci_low"].to_numpy(dtype=float), board["ci_high"].to_numpy(dtype=float) - rsr])
    ax.errorbar(x, rsr, yerr=np.clip(err, 0, None), fmt="o", capsize=5, color="tab:purple", zorder=3)
    labels = [f"#{int(r)} {t}" for r, t in zip(board["rank"], board["teacher"], strict=True)]
    ax.set_xticks(x, labels, rotation=20 if len(board) > 4 else 0)
    ax.set_ylabel("dataset RSR (lower is better)")
    ax.set_xlabel("teacher, by rank (the paper's rule: lowest dataset RSR first)")
    ax.margins(x=0.15)
    ax.grid(axis="y", alpha=0.3)
    return None


def _plot_distribution(d: _Data, ax: Axes) -> str | None:
    ax.set_title(f"Trajectory RSR per teacher, student {d.student_ref} (lower is better)")
    teachers = [t for t in d.board["teacher"] if t in set(d.scores["teacher"])]
    if not teachers:
        return "no scores for this student yet"
    data = [d.scores.loc[d.scores["teacher"] == t, "rsr"].to_numpy() for t in teachers]
    ax.boxplot(data, tick_labels=teachers, showfliers=False, widths=0.5)
    for i, values in enumerate(data, start=1):
        # Deterministic jitter (no RNG): the same store gives the same picture.
        offsets = [((k * 0.618) % 1 - 0.5) * 0.3 for k in range(len(values))]
        ax.scatter([i + o for o in offsets], values, s=10, alpha=0.55, color="tab:blue", zorder=3)
    ax.set_ylabel("trajectory RSR")
    ax.tick_params(axis="x", labelrotation=20 if len(teachers) > 4 else 0)
    ax.grid(axis="y", alpha=0.3)
    return None


def _plot_accuracy(d: _Data, ax: Axes) -> str | None:
    ax.set_title(f"Dataset RSR vs verified accuracy, student {d.student_ref}")
    board = d.board.dropna(subset=["dataset_rsr", "accuracy"])
    if board.empty:
        return "no scored teachers for this student yet"
    ax.scatter(board["dataset_rsr"], board["accuracy"], s=60, color="tab:orange", zorder=3)
    for _, row in board.iterrows():
        ax.annotate(row["teacher"], (row["dataset_rsr"], row["accuracy"]), xytext=(6, 4), textcoords="offset points")
    ax.set_xlabel("dataset RSR (lower is better)")
    ax.set_ylabel("verified accuracy")
    ax.margins(x=0.25, y=0.15)
    ax.grid(alpha=0.3)
    return None


def _plot_selected(d: _Data, ax: Axes) -> str | None:
    p = d.publication
    if p is None:
        ax.set_title(f"Selected per teacher, student {d.student_ref}")
        return "no publication for this student yet (rsr publish)"
    ax.set_title(f"Selected per teacher: {p['name']} ({p['dataset_id']}, {p['n_rows']} rows)")
    ax.bar_label(ax.bar(d.board["teacher"], d.board["selected"], color="tab:green"))
    ax.set_ylabel("rows in the published dataset")
    ax.tick_params(axis="x", labelrotation=20 if len(d.board) > 4 else 0)
    ax.margins(y=0.15)
    return None


def _plot_history(d: _Data, ax: Axes) -> str | None:
    ax.set_title(f"Dataset RSR per teacher after each scoring run, student {d.student_ref}")
    if d.history.empty:
        return "no score history for this student yet"
    # One x position per run (ordinal, labelled with its time): a date axis around a single run spans years.
    runs = d.history.drop_duplicates("run_id").sort_values("at")
    pos = {r: i for i, r in enumerate(runs["run_id"])}
    for teacher, g in d.history.groupby("teacher"):
        g = g.sort_values("at")
        ax.plot([pos[r] for r in g["run_id"]], g["dataset_rsr"], marker="o", label=str(teacher))
    labels = [f"{pd.Timestamp(a):%m-%d %H:%M}\n{r[:10]}" for r, a in zip(runs["run_id"], runs["at"], strict=True)]
    ax.set_xticks(range(len(runs)), labels)
    ax.set_xlim(-0.5, len(runs) - 0.5)
    ax.set_xlabel("scoring run (UTC time of its last score, run id)")
    ax.set_ylabel("dataset RSR")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return None


def _plot_position(d: _Data, ax: Axes) -> str | None:
    ax.set_title(f"Where the surprisal sits along the response, student {d.student_ref}")
    rows = d.scores.dropna(subset=["surprisal_profile"])
    rows = rows[rows["surprisal_profile"].map(len) > 0]
    if rows.empty:
        return "no surprisal profiles yet (scores made before they were recorded)"
    for teacher in [t for t in d.board["teacher"] if t in set(rows["teacher"])]:
        profiles = np.stack(rows.loc[rows["teacher"] == teacher, "surprisal_profile"].map(np.asarray).to_list())
        bins = profiles.shape[1]
        x = (np.arange(bins) + 0.5) * 100 / bins
        ax.plot(x, profiles.mean(axis=0) * 100, marker="o", label=f"{teacher} ({len(profiles)})")
    ax.axhline(100 / bins, color="0.6", linestyle=":", label="even spread")
    ax.set_xlabel("position in the response (% of its scored tokens)")
    ax.set_ylabel("share of the trajectory's surprisal (%)")
    ax.set_xlim(0, 100)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return None


def _plot_length(d: _Data, ax: Axes) -> str | None:
    ax.set_title(f"Trajectory RSR against response length, student {d.student_ref}")
    rows = d.scores.dropna(subset=["rsr"])
    if rows.empty:
        return "no scores for this student yet"
    rho = d.board.set_index("teacher")["rsr_length_spearman"]
    for teacher in [t for t in d.board["teacher"] if t in set(rows["teacher"])]:
        g = rows[rows["teacher"] == teacher]
        label = f"{teacher} (Spearman {rho[teacher]:+.2f})" if pd.notna(rho.get(teacher)) else str(teacher)
        ax.scatter(g["n_tokens"], g["rsr"], s=10, alpha=0.6, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("response tokens scored (log scale)")
    ax.set_ylabel("trajectory RSR (lower is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return None


PLOTS: dict[str, Callable[[_Data, Axes], str | None]] = {
    "teacher_selection.png": _plot_selection,  # dataset RSR per teacher, 95% interval, in rank order (the paper's rule)
    "rsr_distribution.png": _plot_distribution,  # trajectory RSR per teacher (box plot + the points)
    "rsr_vs_accuracy.png": _plot_accuracy,  # dataset RSR vs verified accuracy, one labelled point per teacher
    "selected_per_teacher.png": _plot_selected,  # rows each teacher contributed to the latest publication
    "score_history.png": _plot_history,  # dataset RSR per teacher after each scoring run (cumulative)
    "surprisal_by_position.png": _plot_position,  # per teacher, the share of surprisal in each tenth of a response
    "rsr_vs_length.png": _plot_length,  # per teacher, trajectory RSR against response tokens, with its Spearman
}
PNG_NAMES = tuple(PLOTS)


def _save_plot(d: _Data, name: str, path: Path) -> None:
    import matplotlib  # here: resolve_student and teacher_board need no plotting library
    from matplotlib.figure import Figure

    # A name is only a name: no mathtext, so `gpt $\undefinedmacro$` is drawn as typed, never parsed as TeX.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        fig = Figure(figsize=(7.5, 4.5), dpi=110, layout="constrained")
        ax = fig.add_subplot()
        empty = PLOTS[name](d, ax)
        ax.title.set_fontsize(11)
        if empty:  # still a real picture, saying why it is empty
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.35")
            ax.set(xticks=[], yticks=[])
        with warnings.catch_warnings():  # a name in a script the font lacks is drawn as boxes: not the user's error
            warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
            fig.savefig(path)


def file_slug(name: str, limit: int = 60) -> str:
    """A file-name-safe form of any name: ASCII letters, digits, '.', '_', '-', at most `limit` characters, with a
    digest of the name whenever that changed it (so two names never share a file)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:limit] or "name"
    return slug if slug == name else f"{slug}-{zlib.crc32(name.encode()):08x}"


# ---- HTML ---------------------------------------------------------------------------------------------------


def order_note(share: float, settled: object) -> str | None:
    """How the board shows an adjacent pair's order: '98% settled' / '71% not settled' (None: no next teacher)."""
    return None if pd.isna(share) else f"{share:.0%} {'settled' if settled else 'not settled'}"


def _table(board: pd.DataFrame) -> str:
    b = board.astype({"rank": float})  # NaN, not a nullable int's <NA>: shown as na_rep
    b["interval"] = (b["ci_low"].map("{:.4f}".format) + " – " + b["ci_high"].map("{:.4f}".format)).where(
        b["dataset_rsr"].notna()
    )
    b["order"] = [order_note(a, s) for a, s in zip(b["ahead_share"], b["settled"], strict=True)]
    headers = {"rank": "rank", "teacher": "teacher", "dataset_rsr": "dataset RSR", "interval": "95% interval",
               "order": "above the next in", "rsr_length_spearman": "Spearman(RSR, length)",
               "accuracy": "accuracy", "mean_response_tokens": "mean response tokens", "n": "used for RSR",
               "n_trajectories": "trajectories", "n_scored": "scored", "n_failed": "failed",
               "n_truncated": "truncated", "n_contaminated": "contaminated", "subset": "RSR on a subset",
               "selected": "selected"}  # fmt: skip
    b["subset"] = b["on_subset"].map({True: "yes", False: "no"}).where(b["dataset_rsr"].notna())
    formats = {"rank": "{:.0f}", "dataset_rsr": "{:.4f}", "accuracy": "{:.1%}", "mean_response_tokens": "{:.0f}",
               "rsr_length_spearman": "{:+.2f}"}  # fmt: skip
    shown = b[list(headers)].rename(columns=headers)
    return shown.to_html(index=False, na_rep="-", formatters={headers[k]: v.format for k, v in formats.items()})


def _explain_pages(state: StateDir, d: _Data, out: Path, student: Student) -> dict[str, list[tuple[str, float, str]]]:
    """Per teacher, its lowest- and highest-RSR trajectory token by token (rsr.report.explain), scored as its stored
    score was (the setting's max_tokens): {teacher: [(label, rsr, page path relative to `out`)]}."""
    from rsr.report.explain import explain_trajectory  # here: a report without pages loads no model library

    pages: dict[str, list[tuple[str, float, str]]] = {}
    limit = d.setting.max_tokens if d.setting else None
    for teacher, g in d.scores.dropna(subset=["rsr"]).groupby("teacher", sort=False):
        slug = file_slug(str(teacher))
        for label, row in (("lowest", g.loc[g["rsr"].idxmin()]), ("highest", g.loc[g["rsr"].idxmax()])):
            name = f"explain/{slug}-{label}-rsr.html"
            explain_trajectory(state.duckdb, row["trajectory_id"], student, out / name, max_tokens=limit)
            pages.setdefault(str(teacher), []).append((label, float(row["rsr"]), name))
    return pages


def _html(d: _Data, pngs: list[Path], state: StateDir, pages: dict | None = None) -> str:
    """report.html from its template (autoescaped), with the PNGs inline: the page works on its own."""
    from jinja2 import Template

    return Template(HTML_TEMPLATE.read_text(encoding="utf-8"), autoescape=True).render(
        d=d,
        best=next(iter(d.board.dropna(subset=["dataset_rsr"])["teacher"]), None),  # the board is best first
        table=_table(d.board),  # inserted as is (`safe`): to_html escapes the cells itself
        pages=pages or {},
        figures=[(p.name, base64.b64encode(p.read_bytes()).decode()) for p in pngs],
        metric_version=METRIC_VERSION,
        n_resamples=N_RESAMPLES,
        seed=SEED,
        settled=SETTLED,
        length_tied=LENGTH_TIED,
        tied=d.board.loc[d.board["rsr_length_spearman"].abs() >= LENGTH_TIED, "teacher"].tolist(),
        state_root=state.root,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )


# ---- entry point ----------------------------------------------------------------------------------------------


def _log_to_mlflow(result: ReportResult, pub: dict[str, Any] | None, uri: str) -> None:
    run_id = pub["mlflow_run_id"] if pub else None
    if not run_id:
        result.warnings.append("no publication with an MLflow run for this student: nothing logged to MLflow")
        return
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    try:
        # Only our files: `out` may hold other things the user keeps there.
        for path in [*result.pngs, result.html]:
            client.log_artifact(run_id, str(path), artifact_path="report")
        for path in result.pages:
            client.log_artifact(run_id, str(path), artifact_path="report/explain")
    except (MlflowException, OSError) as err:
        # The files are written either way; say why they are not in MLflow instead of failing the command.
        result.warnings.append(f"could not log the report to MLflow run {run_id} at {uri}: {err}")
        return
    result.mlflow_run_id = run_id


def build_report(
    state: StateDir,
    student: StudentSpec | str,
    out: Path,
    *,
    log_to_mlflow: bool = True,
    mlflow_uri: str | None = None,
    explain_with: Student | None = None,
) -> ReportResult:
    """Write the PNGs and report.html into ``out`` and log them to the latest publication's MLflow run: on
    ``mlflow_uri`` if given, else on the server the publication was logged to, else $MLFLOW_TRACKING_URI or the
    state folder's store. ``explain_with`` (the loaded student, as registered): also each teacher's lowest- and
    highest-RSR trajectory token by token under ``out/explain/``, linked from the page."""
    data = _load(state, StudentSpec(ref=student) if isinstance(student, str) else student)
    if explain_with is not None and explain_with.student_id != data.student_id:
        raise ValueError(f"the loaded student is {explain_with.student_id}, the report is for {data.student_id}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Everything is written beside `out` first and moved in only once all of it is: a failure leaves no half report.
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp-", dir=out.parent) as tmp:
        stage = Path(tmp)
        for name in PLOTS:
            _save_plot(data, name, stage / name)
        pages = _explain_pages(state, data, stage, explain_with) if explain_with is not None else {}
        (stage / "report.html").write_text(_html(data, [stage / n for n in PLOTS], state, pages), encoding="utf-8")
        written = [*PLOTS, *(name for links in pages.values() for _, _, name in links), "report.html"]
        for name in written:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, out / name)
    result = ReportResult([out / n for n in PLOTS], out / "report.html", None, data.student_id)
    result.warnings = [data.note] if data.note else []
    result.pages = [out / name for links in pages.values() for _, _, name in links]
    if log_to_mlflow:
        pub = data.publication
        _log_to_mlflow(result, pub, mlflow_uri or (pub and pub["params"].get("mlflow_uri")) or state.mlflow_uri)
    return result
