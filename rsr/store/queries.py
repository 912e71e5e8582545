"""Every read of the state database, named and typed. ``Reader.open(path)`` reads a consistent snapshot without
ever writing (``connect.open_read_only``); the writer, ``rsr.store.writer.Store``, is a Reader too.

``query``/``query_df`` run ad-hoc SQL for tests and notebooks; the product reads through the named methods.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import astuple, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from rsr.metric import METRIC_VERSION, R_MAX
from rsr.records import Score, Trajectory
from rsr.spec import Registration, StudentSpec, pick_registration
from rsr.store import connect as db
from rsr.store.contamination import ContaminationReads, not_contaminated


def check_dtype(dtype: str | None) -> str:
    if not dtype or dtype == "auto":
        raise ValueError(
            f"score dtype {dtype!r}: give the compute dtype the score was (or will be) made in, e.g. 'bfloat16' "
            "or 'float32' (Student.info()['dtype']), never 'auto': a bf16 score must not answer a float32 request"
        )
    return dtype


@dataclass(frozen=True)
class ScoreKey:
    """How a score is made, besides the trajectory and student: rows differ in value if any of these differ."""

    dtype: str
    max_tokens: int | None = None
    r_max: int = R_MAX
    metric_version: str = METRIC_VERSION


@dataclass(frozen=True)
class ScoreSetting:
    """A row of the ``score_settings`` view: how many of a student's current scores were made one way."""

    student_id: str
    student_label: str | None
    key: ScoreKey
    n_scored: int
    n_truncated: int
    last_scored_at: datetime


@dataclass(frozen=True)
class IngestCounts:
    """One source's records in one ingest: records = stored + repeats + quarantined (a row of N generations is N
    records); the format it was read in and the column each field came from."""

    source: str
    records: int
    stored: int  # distinct trajectories of the source, new or already stored by an earlier run
    repeats: int  # records that repeat an earlier record of the same source exactly (the same trajectory id)
    quarantined: int
    format: str = ""
    fields: dict[str, str] | None = None
    dropped_turns: int = 0  # turns after the last assistant turn of its records (agent trajectories), dropped


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# A chat's last assistant content is the trajectory's `response`, most of a long trace's bytes: the table keeps it
# once, in `response`, and `messages` holds this marker in its place (rows stored before hold the text twice).
# In SQL: replace(messages, '{"$rsr": "response"}', to_json(response)) is the whole chat.
RESPONSE_MARKER = {"$rsr": "response"}
_MARKER_TEXT = json.dumps(RESPONSE_MARKER)


def stored_messages(messages: list[dict], response: str) -> list[dict]:
    """The chat as the table keeps it: the last assistant turn's content, when it is the response, as the marker."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "assistant":
            if response and messages[i].get("content") == response:
                return [*messages[:i], messages[i] | {"content": RESPONSE_MARKER}, *messages[i + 1 :]]
            break
    return messages


def whole_messages(text: str, response: str) -> str:
    """A stored chat's JSON text with the response put back (JSON text again)."""
    return text.replace(_MARKER_TEXT, json.dumps(response, ensure_ascii=False)) if _MARKER_TEXT in text else text


@dataclass(frozen=True)
class SourceFile:
    """An ingested input file (or HF dataset folder) and its digest, taken when it was read."""

    path: str
    sha256: str
    size: int
    kind: str  # "file" | "hf_dir"
    teacher: str | None
    run_id: str | None
    ingested_at: datetime


@dataclass(frozen=True)
class Candidate:
    trajectory_id: str
    score_id: str
    teacher: str
    problem_id: str
    rsr: float | None
    mean_rank: float | None
    mean_surprisal: float | None
    verdict: str | None
    is_duplicate: bool
    truncated: bool = False
    n_tokens: int = 0  # scored response tokens
    mean_entropy: float | None = None  # None: scored before the companion metrics were stored


# Rows the teacher_selection view counts (scored, not truncated, with tokens and finite means) in one setting;
# the parameters are `_used_params`.
_USED = (
    "student_id = ? AND dtype = ? AND max_tokens IS NOT DISTINCT FROM ? AND r_max = ? AND metric_version = ? "
    "AND NOT truncated AND n_tokens > 0 AND isfinite(mean_rank) AND isfinite(mean_surprisal)"
)
_STORED_COLUMNS = (
    "trajectory_id student_id metric_version r_max dtype max_tokens n_tokens sum_rank sum_surprisal rsr mean_rank "
    "mean_surprisal truncated n_reasoning_tokens n_answer_tokens n_tool_tokens render dropped_tool_calls mean_entropy "
    "top1_share"
).split()


def _used_params(student_id: str, setting: ScoreKey | None) -> list[Any]:
    # No setting (never scored): NULLs, which match no row.
    return [student_id, *(astuple(setting) if setting else [None] * 4)]


class Reader(ContaminationReads):
    """The DuckDB state, read. Any number of readers may be open (read-only ones read a snapshot while a flow
    writes); use as a context manager."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, note: str | None, resources: ExitStack) -> None:
        self._con = con
        self.path = path
        self.note = note  # why a snapshot is read (None: the live file)
        self._resources = resources  # closes the connection (and its snapshot)

    @classmethod
    def open(cls, path: str | Path) -> Reader:
        """Open ``path`` read-only: nothing is written nor created; a file older or newer than this code is refused."""
        path, resources = Path(path), ExitStack()
        try:
            con, note = resources.enter_context(db.open_read_only(path))
            db.check_schema(con, path, read_only=True)
        except BaseException:
            resources.close()
            raise
        return cls(con, path, note, resources)

    @property
    def schema_version(self) -> int:
        return db.check_schema(self._con, self.path, read_only=False)

    def close(self) -> None:
        self._resources.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_trajectories(self, ids: Sequence[str] | None = None, teacher: str | None = None) -> list[Trajectory]:
        """Trajectories by id (in the order given, missing ids skipped) and/or teacher (in file order)."""
        join, order, params = "", "t.teacher, t.source_file, t.source_line", [teacher, teacher]
        if ids is not None:
            join = "JOIN (SELECT unnest(?) AS id, generate_subscripts(?, 1) AS pos) b ON b.id = t.trajectory_id"
            order, params = "b.pos", [list(ids), list(ids), *params]
        cur = self._con.execute(
            f"""SELECT {", ".join(f"t.{c}" for c in Trajectory.model_fields)} FROM trajectories t {join}
            WHERE CAST(? AS VARCHAR) IS NULL OR t.teacher = ? ORDER BY {order}""",
            params,
        )
        rows = [dict(zip(Trajectory.model_fields, row, strict=True)) for row in cur.fetchall()]
        return [
            Trajectory(
                **r
                | {"messages": json.loads(whole_messages(r["messages"], r["response"])), "tools": _loads(r["tools"])}
                | {"dropped_turns": r["dropped_turns"] or 0}  # NULL: ingested before schema v9
            )
            for r in rows
        ]

    def responses(self, problem_ids: Sequence[str], rows: Sequence[range] = ()) -> list[tuple]:
        """Named rows (trajectory_id, problem_id, response) of these problems' trajectories, first ingested first.
        `rows`: only at these row positions, so that a page reads the few row groups its rows sit in (a filter on
        problem_id alone reads every response of the table: quadratic over pages)."""
        within = " OR ".join("(rowid >= ? AND rowid < ?)" for _ in rows)
        return self._named(
            f"""SELECT trajectory_id, problem_id, response FROM trajectories
               WHERE problem_id IN (SELECT unnest(CAST(? AS VARCHAR[]))) {f"AND ({within})" if rows else ""}
               ORDER BY ingested_at, teacher, source_file, source_line, trajectory_id""",
            [list(problem_ids), *(bound for r in rows for bound in (r.start, r.stop))],
        )

    def response_rows(self, problem_ids: Sequence[str]) -> list[tuple[str, int, int]]:
        """(problem_id, row position, response characters) of these problems' trajectories: what pages dedup by
        bytes and by where the rows sit."""
        return self._con.execute(
            """SELECT problem_id, rowid, length(response) FROM trajectories
               WHERE problem_id IN (SELECT unnest(CAST(? AS VARCHAR[])))""",
            [list(problem_ids)],
        ).fetchall()

    def mean_response_chars(self) -> float:
        """The mean response length: what sizes verify's pages of rows by bytes."""
        return float(self._con.execute("SELECT coalesce(avg(length(response)), 0) FROM trajectories").fetchall()[0][0])

    def ingest_log(self, run_id: str | None = None) -> list[tuple]:
        """Named rows of the ingest_log view (teacher, source, records, stored, repeats, near_duplicates,
        quarantined, run_id, format, fields, dropped_turns), of one run or all, in the order they were written."""
        return self._named(
            "SELECT * EXCLUDE (logged_at) FROM ingest_log WHERE CAST(? AS VARCHAR) IS NULL OR run_id = ? "
            "ORDER BY logged_at, source",
            [run_id, run_id],
            "IngestLog",
        )

    def trajectory_rows(self) -> int:
        """One past the highest row position of the trajectories table (pages of rows are read by position)."""
        return int(self._con.execute("SELECT coalesce(max(rowid) + 1, 0) FROM trajectories").fetchall()[0][0])

    def _named(self, sql: str, params: Sequence[Any], name: str = "Row") -> list[tuple]:
        cur = self._con.execute(sql, params)
        row = namedtuple(name, [d[0] for d in cur.description])  # read by attribute, like a record
        return [row(*r) for r in cur.fetchall()]

    def unverified(self, rows: range | None = None, teacher: str | None = None) -> list[tuple]:
        """Named rows (trajectory_id, response, declared_answer, gold_answer) of trajectories with no verdict, or
        with a `no_gold` one whose gold (its own, else its problem's) is known now. `rows`: only these row positions;
        a page's rows sit in a few row groups, so it reads only those (paging by id, or OFFSET, would scan the whole
        table for every page: quadratic in the table's size)."""
        rows = range(2**62) if rows is None else rows  # None: every row
        return self._named(
            """SELECT t.trajectory_id, t.response, t.declared_answer,
                coalesce(t.gold_answer, p.gold_answer) AS gold_answer
            FROM trajectories t
            LEFT JOIN verdicts v ON v.trajectory_id = t.trajectory_id
            LEFT JOIN problems p ON p.problem_id = t.problem_id
            WHERE t.rowid >= ? AND t.rowid < ? AND (CAST(? AS VARCHAR) IS NULL OR t.teacher = ?)
              AND (v.trajectory_id IS NULL
                   OR (v.verdict = 'no_gold' AND coalesce(t.gold_answer, p.gold_answer) IS NOT NULL))
            ORDER BY t.trajectory_id""",
            [rows.start, rows.stop, teacher, teacher],
            "Unverified",
        )

    def registrations(self) -> list[Registration]:
        """Every registered student, newest first, as the `registrations` view names it (its label) with its
        template's text when one was given (kept by content)."""
        cur = self._con.execute(
            """SELECT g.student_id, g.ref, g.digest, g.label, g.revision, g.dtype, g.template_name, g.template_digest,
                   CASE WHEN g.template_name IS NOT NULL THEN c.text END, g.chat_template_kwargs, s.info,
                   g.registered_at
            FROM registrations g JOIN students s USING (student_id)
            LEFT JOIN chat_templates c ON c.template_digest = g.template_digest
            ORDER BY g.registered_at DESC, g.student_id DESC"""
        )
        return [
            Registration(*r[:9], chat_template_kwargs=_loads(r[9]), info=_loads(r[10]) or {}, registered_at=r[11])
            for r in cur.fetchall()
        ]

    def students(self) -> list[Registration]:
        """Every registered student, first registered first (the order flows score them in)."""
        return self.registrations()[::-1]

    def find_student(self, spec: StudentSpec) -> Registration:
        """The registration `spec` names (rsr.spec.pick_registration: the one rule), or a ValueError that lists
        the registrations with how to name each."""
        return pick_registration(spec, self.registrations())

    def current_setting(self, student_id: str, dtype: str | None = None) -> ScoreKey | None:
        """How the student's most recent scores (in ``dtype``, when given) were made; None if never scored so."""
        return next((s.key for s in self.score_settings(student_id) if dtype in (None, s.key.dtype)), None)

    def unscored(
        self,
        student_id: str,
        metric_version: str,
        r_max: int,
        *,
        dtype: str,
        max_tokens: int | None = None,
        teacher: str | None = None,
        retry_errors: bool = True,
        include_contaminated: bool = False,
    ) -> list[str]:
        """Trajectory ids with no successful score for this key (error rows count as scored if not retry_errors), a
        problem's trajectories side by side (shards keep them together, so their prompt is computed once). A
        trajectory holding a benchmark problem (contamination) is left out unless `include_contaminated`.

        ``dtype`` is the compute dtype (never "auto"); ``max_tokens`` the effective truncation limit (the
        student's context length when none is set); None only matches rows whose limit was not recorded."""
        error_cond = "AND s.error IS NULL" if retry_errors else ""
        cur = self._con.execute(
            f"""SELECT t.trajectory_id FROM trajectories t
            WHERE (CAST(? AS VARCHAR) IS NULL OR t.teacher = ?)
              AND NOT EXISTS (
                SELECT 1 FROM scores s
                WHERE s.trajectory_id = t.trajectory_id AND s.student_id = ? AND s.metric_version = ?
                  AND s.r_max = ? AND s.dtype = ? AND s.max_tokens IS NOT DISTINCT FROM ? {error_cond})
              AND {not_contaminated("t")}
            ORDER BY t.problem_id, t.trajectory_id""",
            [teacher, teacher, student_id, metric_version, r_max, check_dtype(dtype), max_tokens, include_contaminated],
        )
        return [r[0] for r in cur.fetchall()]

    def missing_metrics(
        self, student_id: str, metric_version: str, r_max: int, *, dtype: str, max_tokens: int | None = None
    ) -> list[str]:
        """Trajectory ids whose successful score for this key was made before the companion metrics were stored
        (mean_entropy NULL): what `--fill-metrics` re-scores (Store.fill_metrics), a problem's side by side."""
        cur = self._con.execute(
            """SELECT s.trajectory_id FROM scores s JOIN trajectories t USING (trajectory_id)
            WHERE s.student_id = ? AND s.metric_version = ? AND s.r_max = ? AND s.dtype = ?
              AND s.max_tokens IS NOT DISTINCT FROM ? AND s.error IS NULL AND s.mean_entropy IS NULL
            ORDER BY t.problem_id, s.trajectory_id""",
            [student_id, metric_version, r_max, check_dtype(dtype), max_tokens],
        )
        return [r[0] for r in cur.fetchall()]

    def score_settings(self, student_id: str | None = None) -> list[ScoreSetting]:
        """How a student's current scores were made (dtype, max_tokens, r_max), with counts (truncated ones too);
        the most recently scored setting first (on a tie, the one with more rows)."""
        cur = self._con.execute(
            """SELECT student_id, student_label, dtype, max_tokens, r_max, n_scored, n_truncated, last_scored_at
            FROM score_settings WHERE CAST(? AS VARCHAR) IS NULL OR student_id = ?
            ORDER BY student_id, last_scored_at DESC, n_scored DESC, dtype, max_tokens NULLS LAST, r_max""",
            [student_id, student_id],
        )
        return [
            ScoreSetting(sid, ref, ScoreKey(dtype, max_tokens, r_max), n, n_trunc, at)
            for sid, ref, dtype, max_tokens, r_max, n, n_trunc, at in cur.fetchall()
        ]

    def source_files(self, teacher: str | None = None, paths: Sequence[str | Path] | None = None) -> list[SourceFile]:
        """The newest digest of each ingested file (per path and teacher), filtered by teacher and/or paths."""
        wanted = None if paths is None else [str(p) for p in paths]
        cur = self._con.execute(
            """SELECT path, sha256, size, kind, teacher, run_id, ingested_at FROM source_files
            WHERE (CAST(? AS VARCHAR) IS NULL OR teacher = ?)
              AND (CAST(? AS VARCHAR[]) IS NULL OR list_contains(?, path))
            QUALIFY row_number() OVER (PARTITION BY path, teacher ORDER BY ingested_at DESC, sha256) = 1
            ORDER BY path, teacher NULLS FIRST""",
            [teacher, teacher, wanted, wanted],
        )
        return [SourceFile(*row) for row in cur.fetchall()]

    def get_publication(self, dataset_id: str) -> dict[str, Any] | None:
        cols, rows = self.query("SELECT * FROM publications WHERE dataset_id = ?", [dataset_id])
        if not rows:
            return None
        pub = dict(zip(cols, rows[0], strict=True))
        pub["params"] = json.loads(pub["params"]) if pub["params"] else {}
        return pub

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run a read query; returns (column names, rows). Meant for SELECTs over the tables and views."""
        cur = self._con.execute(sql, params)
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, cur.fetchall()

    def query_df(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        return self._con.execute(sql, params).df()

    def candidates(
        self, student_id: str, key: ScoreKey | None = None, include_contaminated: bool = False
    ) -> list[Candidate]:
        """Every trajectory with a current (non-error) score for this student made as ``key`` says (dtype, max_tokens,
        r_max), with its verdict and duplicate flag. Without ``key``: the student's only scoring setting; a student
        scored in several settings (e.g. bfloat16 and float32) needs ``key``, so scores made differently never mix.
        Trajectories holding a benchmark problem (contamination) are no candidates unless `include_contaminated`."""
        if key is None:
            settings = self.score_settings(student_id)
            if not settings:
                return []
            if len(settings) > 1:
                found = "; ".join(str(s.key) for s in settings)
                raise ValueError(f"student {student_id} has scores made in several settings ({found}): pick one (key=)")
            key = settings[0].key
        _, rows = self.query(
            f"""SELECT l.trajectory_id, l.score_id, l.teacher, l.problem_id, l.rsr, l.mean_rank, l.mean_surprisal,
                      v.verdict, d.trajectory_id IS NOT NULL AS is_duplicate, l.truncated, l.n_tokens,
                      l.mean_entropy
               FROM latest_scores l
               LEFT JOIN trajectory_verdicts v ON v.trajectory_id = l.trajectory_id
               LEFT JOIN duplicates d ON d.trajectory_id = l.trajectory_id
               WHERE l.student_id = ? AND l.dtype = ? AND l.max_tokens IS NOT DISTINCT FROM ? AND l.r_max = ?
                 AND {not_contaminated("l")}
               ORDER BY l.trajectory_id""",
            [student_id, key.dtype, key.max_tokens, key.r_max, include_contaminated],
        )
        return [Candidate(*row) for row in rows]

    # ---- what the report, the status board and publishing read ---------------------------------------------

    def used_scores(self, student_id: str, key: ScoreKey | None, profile: bool = False) -> pd.DataFrame:
        """teacher, trajectory_id, problem_id, rsr, n_tokens, mean_rank, mean_surprisal (and surprisal_profile) of
        the rows the teacher_selection view counts in this setting, in a fixed order (teacher, trajectory_id): a
        seeded bootstrap over them gives the same numbers every time."""
        extra = ", (SELECT surprisal_profile FROM scores s WHERE s.score_id = l.score_id) AS surprisal_profile"
        return self.query_df(
            f"""SELECT teacher, trajectory_id, problem_id, rsr, n_tokens, mean_rank,
                mean_surprisal{extra if profile else ""}
            FROM latest_scores l WHERE {_USED} ORDER BY teacher, trajectory_id""",
            _used_params(student_id, key),
        )

    def teacher_board(self, student_id: str, key: ScoreKey | None, dataset_id: str | None) -> pd.DataFrame:
        """One row per known teacher, best first (lowest dataset RSR, unscored last): teacher, rank, dataset_rsr,
        n, accuracy, mean_response_tokens, n_trajectories, all_accuracy, n_scored, n_failed, n_truncated,
        on_subset (the dataset RSR rests on fewer trajectories than the teacher has, contaminated ones left out of
        scoring aside), n_dropped_tool_calls (of the used rows: the template rendered no text for them),
        rsr_length_spearman, n_contaminated (trajectories holding a benchmark problem: not scored nor selected by
        default), selected (its rows in publication ``dataset_id``)."""
        params = _used_params(student_id, key)[:4]
        return self.query_df(
            """SELECT s.teacher, v.rank, v.dataset_rsr, coalesce(v.n, 0) AS n, v.accuracy, v.mean_response_tokens,
                       s.n_trajectories, s.accuracy AS all_accuracy,
                       coalesce(c.n_scored, 0) AS n_scored, coalesce(c.n_failed, 0) AS n_failed,
                       coalesce(c.n_truncated, 0) AS n_truncated,
                       coalesce(v.n, 0) + (SELECT count(DISTINCT h.trajectory_id) FROM contamination_hits h
                         JOIN trajectories t USING (trajectory_id) WHERE t.teacher = s.teacher AND NOT EXISTS (
                           SELECT 1 FROM latest_scores l WHERE l.trajectory_id = h.trajectory_id AND l.student_id = ?
                             AND l.dtype = ? AND l.max_tokens IS NOT DISTINCT FROM ? AND l.r_max = ?))
                         < s.n_trajectories AS on_subset,
                       coalesce(v.dropped_tool_calls, 0) AS n_dropped_tool_calls, v.rsr_length_spearman,
                       (SELECT count(DISTINCT h.trajectory_id) FROM contamination_hits h
                         JOIN trajectories t USING (trajectory_id) WHERE t.teacher = s.teacher) AS n_contaminated,
                       (SELECT count(*) FROM publication_items i JOIN trajectories t USING (trajectory_id)
                         WHERE i.dataset_id = ? AND t.teacher = s.teacher) AS selected
                FROM teacher_summary s
                LEFT JOIN teacher_selection v ON v.teacher = s.teacher AND v.student_id = ?
                     AND v.dtype = ? AND v.max_tokens IS NOT DISTINCT FROM ? AND v.r_max = ?
                LEFT JOIN teacher_coverage c ON c.teacher = s.teacher AND c.student_id = ?
                     AND c.dtype = ? AND c.max_tokens IS NOT DISTINCT FROM ? AND c.r_max = ?
                ORDER BY v.rank NULLS LAST, s.teacher""",
            [*params, dataset_id, *params, *params],
        )

    def score_history(self, student_id: str, key: ScoreKey | None) -> pd.DataFrame:
        """Every successful score of this setting ever stored, oldest first (teacher, trajectory_id, run_id,
        scored_at, score_id, mean_rank, mean_surprisal)."""
        return self.query_df(
            f"""SELECT teacher, trajectory_id, run_id, scored_at, score_id, mean_rank, mean_surprisal
            FROM score_history WHERE error IS NULL AND teacher IS NOT NULL AND {_USED} ORDER BY scored_at, score_id""",
            _used_params(student_id, key),
        )

    def latest_publication(self, student_id: str | None = None) -> dict[str, Any] | None:
        """The newest selection published (of this student, when given), as get_publication gives it; a random
        baseline published beside a selection is not one (its params say so: baseline.role)."""
        found = self._con.execute(
            "SELECT dataset_id FROM publications WHERE (CAST(? AS VARCHAR) IS NULL OR student_id = ?) "
            "AND coalesce(json_extract_string(params, '$.baseline.role'), '') <> 'baseline' "
            "ORDER BY created_at DESC LIMIT 1",
            [student_id, student_id],
        ).fetchall()
        return self.get_publication(found[0][0]) if found else None

    def n_quarantined(self) -> int:
        return int(self._con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0])

    def stored_score(self, trajectory_id: str, student_id: str, dtype: str, max_tokens: int) -> Score | None:
        """The student's latest score of the trajectory in ``dtype``: the row made with ``max_tokens``, else the
        most recent one."""
        found = self._con.execute(
            f"""SELECT {", ".join(_STORED_COLUMNS)} FROM latest_scores
            WHERE trajectory_id = ? AND student_id = ? AND dtype = ?
            ORDER BY (max_tokens IS NOT DISTINCT FROM ?) DESC, scored_at DESC, score_id DESC LIMIT 1""",
            [trajectory_id, student_id, dtype, max_tokens],
        ).fetchall()
        row = dict(zip(_STORED_COLUMNS, found[0], strict=True)) if found else None
        return Score(**{k: v for k, v in row.items() if v is not None}) if row else None

    def source_paths(self, trajectory_ids: Sequence[str]) -> list[str]:
        """The input files (source_file) these trajectories were read from."""
        return [
            r[0]
            for r in self._con.execute(
                "SELECT DISTINCT source_file FROM trajectories "
                "WHERE trajectory_id IN (SELECT unnest(CAST(? AS VARCHAR[])))",
                [list(trajectory_ids)],
            ).fetchall()
        ]

    def sft_rows(self, trajectory_ids: Sequence[str]) -> list[dict[str, Any]]:
        """messages and tools (JSON text), trajectory_id, teacher, problem_id, problem, gold_answer and verdict of
        these trajectories, in canonical (problem_id, trajectory_id) order."""
        cols, rows = self.query(
            "SELECT t.messages, t.tools, trajectory_id, t.teacher, t.problem_id, t.problem, v.gold_answer, v.verdict, "
            "t.response FROM trajectories t JOIN trajectory_verdicts v USING (trajectory_id) "
            "WHERE list_contains(CAST(? AS VARCHAR[]), trajectory_id) ORDER BY t.problem_id, trajectory_id",
            [list(trajectory_ids)],
        )
        out = [dict(zip(cols, r, strict=True)) for r in rows]
        for r in out:
            r["messages"] = whole_messages(r["messages"], r.pop("response"))
        return out
