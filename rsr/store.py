"""DuckDB store: one file, the single writer. Schema, migrations (views included) and every query live here.

``Store.open(path)``: the flow's one writer; ``read_only=True``: anyone else. Each ``add_*``/``set_*`` call is
one statement (so one transaction) over an Arrow batch: one round trip per call, not per row. Tables and views:
``docs/sql.md``.

Scores: a row's key is everything that changes its value, ``ScoreKey``: trajectory, student (its id carries
the weights digest), compute dtype, ``max_tokens`` (truncation), ``r_max`` and metric version. A successful
score (``error IS NULL``) is never recomputed for the same key; rows that carry an ``error`` are kept as history
but do not count as scored, so ``unscored`` offers them again (unless ``retry_errors=False``). ``score_id``
hashes the key (+ the error text for failed rows), so a retried shard inserts nothing twice.
"""

from __future__ import annotations

import json
import uuid
from collections import namedtuple
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from rsr import db
from rsr.metric import METRIC_VERSION, R_MAX
from rsr.records import Duplicate, Problem, Rejected, Score, Trajectory, Verdict, _digest

# Ordered, append-only: never edit a shipped entry, add a new one. Index i is schema version i + 1.
# Views are created here too (CREATE OR REPLACE VIEW in a new entry redefines one), never at open.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY,
        flow_name VARCHAR NOT NULL,
        prefect_flow_run_id VARCHAR,
        mlflow_run_id VARCHAR,
        status VARCHAR NOT NULL,
        params JSON,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP
    );
    CREATE TABLE problems (
        problem_id VARCHAR PRIMARY KEY,
        text VARCHAR NOT NULL,
        gold_answer VARCHAR,
        source VARCHAR
    );
    CREATE TABLE trajectories (
        trajectory_id VARCHAR PRIMARY KEY,
        source_id VARCHAR,
        teacher VARCHAR NOT NULL,
        problem_id VARCHAR NOT NULL,
        problem VARCHAR NOT NULL,
        messages JSON NOT NULL,
        response VARCHAR NOT NULL,
        declared_answer VARCHAR,
        gold_answer VARCHAR,
        source_file VARCHAR NOT NULL,
        source_line BIGINT NOT NULL,
        run_id VARCHAR,
        ingested_at TIMESTAMP NOT NULL
    );
    CREATE TABLE quarantine (
        quarantine_id VARCHAR PRIMARY KEY,
        source_file VARCHAR NOT NULL,
        source_line BIGINT NOT NULL,
        reason VARCHAR NOT NULL,
        raw VARCHAR,
        run_id VARCHAR,
        "at" TIMESTAMP NOT NULL
    );
    CREATE TABLE duplicates (
        trajectory_id VARCHAR PRIMARY KEY,
        dup_of VARCHAR NOT NULL,
        similarity DOUBLE,
        kind VARCHAR NOT NULL,
        run_id VARCHAR
    );
    CREATE TABLE verdicts (
        trajectory_id VARCHAR PRIMARY KEY,
        verdict VARCHAR NOT NULL,
        extracted_answer VARCHAR,
        gold_answer VARCHAR,
        detail VARCHAR,
        run_id VARCHAR,
        "at" TIMESTAMP NOT NULL
    );
    CREATE TABLE students (
        student_id VARCHAR PRIMARY KEY,
        ref VARCHAR NOT NULL,
        digest VARCHAR,
        info JSON,
        registered_at TIMESTAMP NOT NULL
    );
    CREATE TABLE scores (
        score_id VARCHAR PRIMARY KEY,
        trajectory_id VARCHAR NOT NULL,
        student_id VARCHAR NOT NULL,
        metric_version VARCHAR NOT NULL,
        r_max INTEGER NOT NULL,
        n_tokens INTEGER NOT NULL,
        sum_rank DOUBLE,
        sum_surprisal DOUBLE,
        sum_rank_unclipped DOUBLE,
        rsr DOUBLE,
        mean_rank DOUBLE,
        mean_surprisal DOUBLE,
        mean_rank_unclipped DOUBLE,
        truncated BOOLEAN NOT NULL,
        error VARCHAR,
        run_id VARCHAR,
        scored_at TIMESTAMP NOT NULL
    );
    CREATE TABLE publications (
        dataset_id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        path VARCHAR NOT NULL,
        student_id VARCHAR NOT NULL,
        policy VARCHAR NOT NULL,
        params JSON,
        n_rows BIGINT NOT NULL,
        content_digest VARCHAR NOT NULL,
        mlflow_run_id VARCHAR,
        run_id VARCHAR,
        created_at TIMESTAMP NOT NULL
    );
    CREATE TABLE publication_items (
        dataset_id VARCHAR NOT NULL,
        trajectory_id VARCHAR NOT NULL,
        score_id VARCHAR,
        PRIMARY KEY (dataset_id, trajectory_id)
    );
    """,
    # v2: a score names how it was made (dtype, max_tokens); lineage digests of ingested files; the views.
    # Rows scored before v2 get what is known: the dtype their student was registered with, and as max_tokens its
    # context length where the row was not truncated (any limit that did not cut it gives the same value).
    """
    ALTER TABLE scores ADD COLUMN dtype VARCHAR;
    ALTER TABLE scores ADD COLUMN max_tokens INTEGER;
    UPDATE scores SET
        dtype = coalesce(st.info ->> '$.dtype', 'unknown'),
        max_tokens = CASE WHEN NOT scores.truncated THEN TRY_CAST(st.info ->> '$.context_length' AS INTEGER) END
    FROM students st WHERE st.student_id = scores.student_id;
    UPDATE scores SET dtype = 'unknown' WHERE dtype IS NULL;
    CREATE TABLE source_files (
        path VARCHAR NOT NULL,
        sha256 VARCHAR NOT NULL,
        size BIGINT NOT NULL,
        kind VARCHAR NOT NULL,
        teacher VARCHAR,
        run_id VARCHAR,
        ingested_at TIMESTAMP NOT NULL
    );
    DROP VIEW IF EXISTS teacher_leaderboard;
    CREATE OR REPLACE VIEW teacher_summary AS
        SELECT t.teacher,
               count(*) AS n_trajectories,
               count(*) FILTER (WHERE d.trajectory_id IS NULL) AS n_unique,
               count(*) FILTER (WHERE v.verdict = 'correct') AS n_correct,
               count(*) FILTER (WHERE v.verdict = 'incorrect') AS n_incorrect,
               count(*) FILTER (WHERE v.verdict = 'no_answer') AS n_no_answer,
               CAST(count(*) FILTER (WHERE v.verdict = 'correct') AS DOUBLE) / count(*) AS accuracy
        FROM trajectories t
        LEFT JOIN verdicts v ON v.trajectory_id = t.trajectory_id
        LEFT JOIN duplicates d ON d.trajectory_id = t.trajectory_id
        GROUP BY t.teacher;
    CREATE OR REPLACE VIEW trajectory_verdicts AS
        SELECT t.trajectory_id, t.source_id, t.teacher, t.problem_id, v.extracted_answer,
               coalesce(v.gold_answer, t.gold_answer, p.gold_answer) AS gold_answer, v.verdict
        FROM trajectories t
        LEFT JOIN verdicts v ON v.trajectory_id = t.trajectory_id
        LEFT JOIN problems p ON p.problem_id = t.problem_id;
    CREATE OR REPLACE VIEW score_history AS
        SELECT s.*, t.teacher, t.problem_id, st.ref AS student, r.flow_name
        FROM scores s
        LEFT JOIN trajectories t ON t.trajectory_id = s.trajectory_id
        LEFT JOIN students st ON st.student_id = s.student_id
        LEFT JOIN runs r ON r.run_id = s.run_id;
    -- One successful row per score key (add_scores keeps it so; the newest wins should two ever exist).
    -- The metric version is fixed here: a new METRIC_VERSION comes with a migration redefining this view.
    CREATE OR REPLACE VIEW latest_scores AS
        SELECT s.trajectory_id, t.teacher, t.problem_id, s.student_id, st.ref AS student, s.rsr,
               s.n_tokens, s.mean_rank, s.mean_surprisal, s.truncated, s.score_id, s.run_id, s.scored_at,
               s.r_max, s.dtype, s.max_tokens, s.sum_rank, s.sum_surprisal, s.metric_version
        FROM scores s
        JOIN trajectories t ON t.trajectory_id = s.trajectory_id
        LEFT JOIN students st ON st.student_id = s.student_id
        WHERE s.error IS NULL AND s.metric_version = 'rsr-v1'
        QUALIFY row_number() OVER (
            PARTITION BY s.trajectory_id, s.student_id, s.dtype, s.max_tokens, s.r_max
            ORDER BY s.scored_at DESC, s.score_id DESC) = 1;
    CREATE OR REPLACE VIEW score_settings AS
        SELECT student_id, any_value(student) AS student, dtype, max_tokens, r_max,
               count(*) AS n_scored, count(*) FILTER (WHERE truncated) AS n_truncated,
               max(scored_at) AS last_scored_at
        FROM latest_scores
        GROUP BY student_id, dtype, max_tokens, r_max;
    -- The paper's rule: per student and scoring setting, teachers by dataset RSR, lowest first. Dataset RSR =
    -- sum of per-trajectory mean ranks / sum of mean surprisals (rsr.metric.dataset_rsr), over the teacher's
    -- scored trajectories that are not truncated, with tokens and finite means.
    CREATE OR REPLACE VIEW teacher_selection AS
        WITH used AS (
            SELECT l.*, v.verdict FROM latest_scores l
            LEFT JOIN verdicts v ON v.trajectory_id = l.trajectory_id
            WHERE NOT l.truncated AND l.n_tokens > 0 AND isfinite(l.mean_rank) AND isfinite(l.mean_surprisal)),
        per_teacher AS (
            SELECT student_id, any_value(student) AS student, teacher, dtype, max_tokens, r_max,
                   sum(mean_rank) / NULLIF(sum(mean_surprisal), 0) AS dataset_rsr,
                   count(*) AS n,
                   CAST(count(*) FILTER (WHERE verdict = 'correct') AS DOUBLE) / count(*) AS accuracy,
                   avg(n_tokens) AS mean_response_tokens
            FROM used
            GROUP BY student_id, teacher, dtype, max_tokens, r_max)
        SELECT *, row_number() OVER (
                   PARTITION BY student_id, dtype, max_tokens, r_max
                   ORDER BY dataset_rsr ASC NULLS LAST, teacher) AS rank
        FROM per_teacher;
    CREATE OR REPLACE VIEW dataset_lineage AS
        SELECT p.dataset_id, p.name AS dataset_name, i.trajectory_id, t.teacher, i.score_id, s.rsr,
               s.run_id AS score_run_id, p.run_id AS publish_run_id, p.mlflow_run_id
        FROM publication_items i
        JOIN publications p ON p.dataset_id = i.dataset_id
        LEFT JOIN trajectories t ON t.trajectory_id = i.trajectory_id
        LEFT JOIN scores s ON s.score_id = i.score_id;
    """,
    # v3: several generations per input row (which one, and the input's own correctness flag); what each score
    # covered (reasoning, answer and tool-call tokens) and how the chat was rendered; per teacher and setting, how
    # many trajectories were ingested, scored, failed and truncated, so a dataset RSR resting on a subset shows.
    """
    ALTER TABLE trajectories ADD COLUMN generation INTEGER;
    ALTER TABLE trajectories ADD COLUMN teacher_correct BOOLEAN;
    ALTER TABLE scores ADD COLUMN n_reasoning_tokens INTEGER;
    ALTER TABLE scores ADD COLUMN n_answer_tokens INTEGER;
    ALTER TABLE scores ADD COLUMN n_tool_tokens INTEGER;
    ALTER TABLE scores ADD COLUMN render VARCHAR;
    CREATE OR REPLACE VIEW latest_scores AS
        SELECT s.trajectory_id, t.teacher, t.problem_id, s.student_id, st.ref AS student, s.rsr,
               s.n_tokens, s.mean_rank, s.mean_surprisal, s.truncated, s.score_id, s.run_id, s.scored_at,
               s.r_max, s.dtype, s.max_tokens, s.sum_rank, s.sum_surprisal, s.metric_version,
               s.n_reasoning_tokens, s.n_answer_tokens, s.n_tool_tokens, s.render
        FROM scores s
        JOIN trajectories t ON t.trajectory_id = s.trajectory_id
        LEFT JOIN students st ON st.student_id = s.student_id
        WHERE s.error IS NULL AND s.metric_version = 'rsr-v1'
        QUALIFY row_number() OVER (
            PARTITION BY s.trajectory_id, s.student_id, s.dtype, s.max_tokens, s.r_max
            ORDER BY s.scored_at DESC, s.score_id DESC) = 1;
    -- Per student, scoring setting and teacher: every ingested trajectory is scored (a successful row), failed
    -- (only error rows), or not scored yet; truncated ones are scored on a prefix and left out of dataset RSR.
    CREATE OR REPLACE VIEW teacher_coverage AS
        WITH settings AS (
            SELECT DISTINCT student_id, dtype, max_tokens, r_max FROM scores WHERE metric_version = 'rsr-v1'),
        attempts AS (
            SELECT trajectory_id, student_id, dtype, max_tokens, r_max,
                   bool_or(error IS NULL) AS ok, bool_or(error IS NULL AND truncated) AS truncated
            FROM scores WHERE metric_version = 'rsr-v1'
            GROUP BY ALL)
        SELECT st.student_id, st.dtype, st.max_tokens, st.r_max, t.teacher,
               count(*) AS n_ingested,
               count(*) FILTER (WHERE a.ok) AS n_scored,
               count(*) FILTER (WHERE NOT a.ok) AS n_failed,
               count(*) FILTER (WHERE a.truncated) AS n_truncated,
               count(*) FILTER (WHERE a.trajectory_id IS NULL) AS n_unscored
        FROM settings st
        CROSS JOIN trajectories t
        LEFT JOIN attempts a ON a.trajectory_id = t.trajectory_id AND a.student_id = st.student_id
             AND a.dtype = st.dtype AND a.max_tokens IS NOT DISTINCT FROM st.max_tokens AND a.r_max = st.r_max
        GROUP BY ALL;
    -- As in v2, plus coverage: n_ingested/n_scored/n_failed/n_truncated from teacher_coverage, the reasoning,
    -- answer and tool-call tokens the used rows covered, and on_subset: the dataset RSR rests on fewer
    -- trajectories than the teacher has (failed, truncated, unscored or without a finite RSR).
    CREATE OR REPLACE VIEW teacher_selection AS
        WITH used AS (
            SELECT l.*, v.verdict FROM latest_scores l
            LEFT JOIN verdicts v ON v.trajectory_id = l.trajectory_id
            WHERE NOT l.truncated AND l.n_tokens > 0 AND isfinite(l.mean_rank) AND isfinite(l.mean_surprisal)),
        per_teacher AS (
            SELECT student_id, any_value(student) AS student, teacher, dtype, max_tokens, r_max,
                   sum(mean_rank) / NULLIF(sum(mean_surprisal), 0) AS dataset_rsr,
                   count(*) AS n,
                   CAST(count(*) FILTER (WHERE verdict = 'correct') AS DOUBLE) / count(*) AS accuracy,
                   avg(n_tokens) AS mean_response_tokens,
                   sum(n_reasoning_tokens) AS reasoning_tokens,
                   sum(n_answer_tokens) AS answer_tokens,
                   sum(n_tool_tokens) AS tool_tokens
            FROM used
            GROUP BY student_id, teacher, dtype, max_tokens, r_max)
        SELECT p.student_id, p.student, p.teacher, p.dtype, p.max_tokens, p.r_max, p.dataset_rsr, p.n, p.accuracy,
               p.mean_response_tokens,
               row_number() OVER (
                   PARTITION BY p.student_id, p.dtype, p.max_tokens, p.r_max
                   ORDER BY p.dataset_rsr ASC NULLS LAST, p.teacher) AS rank,
               c.n_ingested, c.n_scored, c.n_failed, c.n_truncated, p.n < c.n_ingested AS on_subset,
               p.reasoning_tokens, p.answer_tokens, p.tool_tokens
        FROM per_teacher p
        JOIN teacher_coverage c ON c.student_id = p.student_id AND c.teacher = p.teacher AND c.dtype = p.dtype
             AND c.max_tokens IS NOT DISTINCT FROM p.max_tokens AND c.r_max = p.r_max;
    """,
    # v4: where along each response its surprisal sits (the share in each tenth), for the report's position plot.
    """
    ALTER TABLE scores ADD COLUMN surprisal_profile DOUBLE[];
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
# The metric version the views above were written for (checked by a test against rsr.metric.METRIC_VERSION).
VIEWS_METRIC_VERSION = "rsr-v1"


def _now() -> datetime:
    # TIMESTAMP columns hold naive UTC: DuckDB's TIMESTAMP has no zone, and the session zone must not matter.
    return datetime.now(UTC).replace(tzinfo=None)


def _check_dtype(dtype: str | None) -> str:
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


def score_id_for(score: Score) -> str:
    """Deterministic id: the score key, plus the error text for failed rows (so distinct failures are kept)."""
    key = (score.trajectory_id, score.student_id, score.metric_version, score.r_max, score.dtype, score.max_tokens)
    return "s-" + _digest(*map(str, (*key, score.error or "")))


def quarantine_id_for(rejected: Rejected) -> str:
    return "q-" + _digest(*map(str, (rejected.source_file, rejected.source_line, rejected.reason, rejected.raw)))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True)
class StudentRow:
    student_id: str
    ref: str
    digest: str | None
    info: dict[str, Any]
    registered_at: datetime


@dataclass(frozen=True)
class ScoreSetting:
    """A row of the ``score_settings`` view: how many of a student's current scores were made one way."""

    student_id: str
    student: str | None
    key: ScoreKey
    n_scored: int
    n_truncated: int
    last_scored_at: datetime


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


class Store:
    """The DuckDB state. One read-write opener at a time (DuckDB's own rule); any number of read-only ones."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool, note: str | None, resources: ExitStack
    ) -> None:
        self._con = con
        self.path = path
        self.read_only = read_only
        self.note = note  # read-only only: why a snapshot is read (None: the live file)
        self._resources = resources  # closes the connection (and, read-only, its snapshot)
        self._schemas: dict[str, pa.Schema] = {}

    # ---- lifecycle -------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, read_only: bool = False) -> Store:
        """Open the database at ``path`` (read-write: create and migrate it); use as a context manager. Read-only
        never writes nor creates anything; it reads a snapshot while a flow holds the state folder's writer lock."""
        path = Path(path)
        resources = ExitStack()
        try:
            if read_only:
                con, note = resources.enter_context(db.open_read_only(path))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                con, note = resources.enter_context(db.connect(path, read_only=False)), None
            store = cls(con, path, read_only, note, resources)
            store._migrate()
        except BaseException:
            resources.close()
            raise
        return store

    def close(self) -> None:
        self._resources.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        # fetchall, not fetchone: a half-read result would block the next Arrow registration on this connection.
        [(exists,)] = self._con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchall()
        return int(self._con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] or 0) if exists else 0

    def _migrate(self) -> None:
        """Refuse a file newer than this code (or, read-only, older); apply the migrations it lacks, each in one
        transaction with its schema_version row."""
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: schema version {current} is newer than this code ({SCHEMA_VERSION}); upgrade rsr-curate"
            )
        if self.read_only and current < SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: schema version {current} is older than this code ({SCHEMA_VERSION}); "
                "open it read-write once (any flow run does) to migrate"
            )
        for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            with self._tx():
                self._con.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)"
                )
                self._con.execute(sql)
                self._con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, _now()])

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self._con.begin()
        try:
            yield
        except BaseException:
            self._con.rollback()
            raise
        self._con.commit()

    @contextmanager
    def _batch(self, table: pa.Table) -> Iterator[str]:
        """Expose an Arrow table to SQL under a unique name. Registered outside the caller's transaction:
        unregistering inside an aborted one would itself fail."""
        name = f"_batch_{uuid.uuid4().hex}"
        self._con.register(name, table)
        try:
            yield name
        finally:
            self._con.unregister(name)

    def _arrow(self, table: str, rows: Iterable[dict[str, Any]]) -> pa.Table:
        """Rows (column -> value; a missing column is NULL) as an Arrow table typed like ``table`` itself, so
        that all-None columns keep their type and the batch lines up with the table's columns."""
        if table not in self._schemas:
            self._schemas[table] = self._con.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
        return pa.Table.from_pylist(list(rows), schema=self._schemas[table])

    def _insert(self, table: str, rows: Iterable[dict[str, Any]], tail: str = "", verb: str = "INSERT") -> int:
        """Insert rows in one statement and one round trip (an Arrow batch, not a statement per row); returns how
        many were inserted. ``tail`` follows ``SELECT * FROM <batch> b``: a WHERE over ``b`` and/or ON CONFLICT."""
        batch = self._arrow(table, rows)
        if not batch.num_rows:
            return 0
        with self._batch(batch) as name:  # one statement: its own transaction
            return self._count(f"{verb} INTO {table} SELECT * FROM {name} b {tail}")

    def _count(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """The row count that DuckDB answers an INSERT or UPDATE with."""
        return int(self._con.execute(sql, params).fetchall()[0][0])

    # ---- runs ------------------------------------------------------------------------------------------

    def start_run(
        self, flow_name: str, params: dict[str, Any] | None = None, prefect_flow_run_id: str | None = None
    ) -> str:
        run_id = "r-" + uuid.uuid4().hex[:20]
        self._con.execute(
            "INSERT INTO runs (run_id, flow_name, prefect_flow_run_id, status, params, started_at) "
            "VALUES (?, ?, ?, 'running', ?, ?)",
            [run_id, flow_name, prefect_flow_run_id, _json(params or {}), _now()],
        )
        return run_id

    def finish_run(self, run_id: str, status: str, mlflow_run_id: str | None = None) -> None:
        self._con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, mlflow_run_id = coalesce(?, mlflow_run_id) WHERE run_id = ?",
            [status, _now(), mlflow_run_id, run_id],
        )

    def mark_interrupted_runs(self) -> int:
        """Runs left "running" by a process that died (SIGKILL, OOM, power loss) become "interrupted".

        Call only while holding the state folder's writer lock as its outermost holder: then no other flow can
        be running, so every "running" row is stale. Returns how many rows were marked."""
        return self._count("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")

    def set_run_mlflow(self, run_id: str, mlflow_run_id: str) -> None:
        self._con.execute("UPDATE runs SET mlflow_run_id = ? WHERE run_id = ?", [mlflow_run_id, run_id])

    # ---- problems and trajectories ---------------------------------------------------------------------

    def upsert_problems(self, problems: Sequence[Problem]) -> None:
        """Insert new problems; for known ones, fill in the gold answer (and its source) only if it was missing."""
        rows = {p.problem_id: p.model_dump() for p in problems}  # last one wins within a batch
        self._insert(
            "problems",
            rows.values(),
            """ON CONFLICT (problem_id) DO UPDATE SET
                source = CASE WHEN problems.gold_answer IS NULL AND excluded.gold_answer IS NOT NULL
                              THEN excluded.source ELSE problems.source END,
                gold_answer = coalesce(problems.gold_answer, excluded.gold_answer)""",
        )

    def add_trajectories(self, trajectories: Sequence[Trajectory], run_id: str | None) -> int:
        """Insert trajectories whose id is new; returns how many were new (re-ingest adds nothing)."""
        now = _now()
        rows: dict[str, dict[str, Any]] = {}
        for t in trajectories:
            if t.trajectory_id not in rows:  # first one wins within a batch, as across batches
                row = rows[t.trajectory_id] = t.model_dump() | {"run_id": run_id, "ingested_at": now}
                row["messages"] = _json(row["messages"])
        return self._insert("trajectories", rows.values(), "ON CONFLICT DO NOTHING")

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
        return [Trajectory(**r | {"messages": json.loads(r["messages"])}) for r in rows]  # the model validates them

    # ---- quarantine, duplicates, verdicts --------------------------------------------------------------

    def add_rejected(self, rejected: Sequence[Rejected], run_id: str | None) -> int:
        """Quarantine rejected records; the same (file, line, reason, raw) twice is a no-op. Returns # new."""
        now = _now()
        rows = {
            quarantine_id_for(r): {"quarantine_id": quarantine_id_for(r), **r.model_dump(), "run_id": run_id, "at": now}
            for r in rejected
        }
        return self._insert("quarantine", rows.values(), "ON CONFLICT DO NOTHING")

    def set_duplicates(self, duplicates: Sequence[Duplicate], run_id: str | None) -> None:
        """Mark duplicates (upsert by trajectory_id: the latest dedup run's view wins).

        A row whose finding is unchanged is left alone (run_id included), so a re-run changes nothing."""
        rows = {d.trajectory_id: {**d.model_dump(), "run_id": run_id} for d in duplicates}
        self._insert(
            "duplicates",
            rows.values(),
            """ON CONFLICT (trajectory_id) DO UPDATE SET dup_of = excluded.dup_of,
                similarity = excluded.similarity, kind = excluded.kind, run_id = excluded.run_id
            WHERE duplicates.dup_of IS DISTINCT FROM excluded.dup_of
               OR duplicates.similarity IS DISTINCT FROM excluded.similarity
               OR duplicates.kind IS DISTINCT FROM excluded.kind""",
        )

    def set_verdicts(self, verdicts: Sequence[Verdict], run_id: str | None) -> None:
        """Store verdicts; the latest write per trajectory wins (e.g. re-verification once gold arrives)."""
        now = _now()
        rows = {v.trajectory_id: {**v.model_dump(), "run_id": run_id, "at": now} for v in verdicts}
        self._insert("verdicts", rows.values(), verb="INSERT OR REPLACE")

    def unverified(self, rows: range | None = None, teacher: str | None = None) -> list[tuple]:
        """Named rows (trajectory_id, response, declared_answer, gold_answer) of trajectories with no verdict, or
        with a `no_gold` one whose gold (its own, else its problem's) is known now. `rows`: only these row positions;
        a page's rows sit in a few row groups, so it reads only those (paging by id, or OFFSET, would scan the whole
        table for every page: quadratic in the table's size)."""
        rows = range(2**62) if rows is None else rows  # None: every row
        cur = self._con.execute(
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
        )
        row = namedtuple("Unverified", [d[0] for d in cur.description])  # read by attribute, like a Trajectory
        return [row(*r) for r in cur.fetchall()]

    # ---- students and scores ---------------------------------------------------------------------------

    def register_student(
        self, student_id: str, ref: str, digest: str | None, info: dict[str, Any] | None = None
    ) -> None:
        """Register (or refresh the ref/info of) a student; registered_at keeps the first registration time."""
        self._con.execute(
            """INSERT INTO students VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (student_id) DO UPDATE SET ref = excluded.ref, digest = excluded.digest,
                info = excluded.info""",
            [student_id, ref, digest, _json(info or {}), _now()],
        )

    def students(self) -> list[StudentRow]:
        rows = self._con.execute("SELECT * FROM students ORDER BY registered_at, student_id").fetchall()
        return [StudentRow(sid, ref, dig, json.loads(info) if info else {}, at) for sid, ref, dig, info, at in rows]

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
    ) -> list[str]:
        """Trajectory ids with no successful score for this key (error rows count as scored if not retry_errors).

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
            ORDER BY t.trajectory_id""",
            [teacher, teacher, student_id, metric_version, r_max, _check_dtype(dtype), max_tokens],
        )
        return [r[0] for r in cur.fetchall()]

    def add_scores(self, scores: Sequence[Score], run_id: str | None) -> int:
        """Append scores whose key has no successful row yet (and whose score_id is new). Returns # inserted.

        Every score must name its compute dtype (``Score.dtype``): a ValueError otherwise, nothing stored."""
        now = _now()
        rows: dict[str, dict[str, Any]] = {}
        for s in scores:
            _check_dtype(s.dtype)
            sid = score_id_for(s)
            rows.setdefault(sid, {"score_id": sid, **s.model_dump(), "run_id": run_id, "scored_at": now})
        # The key check is not the primary key's: a row scored before v2 has a score_id hashed otherwise.
        return self._insert(
            "scores",
            rows.values(),
            """WHERE NOT EXISTS (
                SELECT 1 FROM scores s
                WHERE s.trajectory_id = b.trajectory_id AND s.student_id = b.student_id
                  AND s.metric_version = b.metric_version AND s.r_max = b.r_max AND s.dtype = b.dtype
                  AND s.max_tokens IS NOT DISTINCT FROM b.max_tokens AND s.error IS NULL)
            ON CONFLICT DO NOTHING""",
        )

    def score_settings(self, student_id: str | None = None) -> list[ScoreSetting]:
        """How a student's current scores were made (dtype, max_tokens, r_max), with counts (truncated ones too);
        the most recently scored setting first (on a tie, the one with more rows)."""
        cur = self._con.execute(
            """SELECT student_id, student, dtype, max_tokens, r_max, n_scored, n_truncated, last_scored_at
            FROM score_settings WHERE CAST(? AS VARCHAR) IS NULL OR student_id = ?
            ORDER BY student_id, last_scored_at DESC, n_scored DESC, dtype, max_tokens NULLS LAST, r_max""",
            [student_id, student_id],
        )
        return [
            ScoreSetting(sid, ref, ScoreKey(dtype, max_tokens, r_max), n, n_trunc, at)
            for sid, ref, dtype, max_tokens, r_max, n, n_trunc, at in cur.fetchall()
        ]

    # ---- lineage of input files ------------------------------------------------------------------------

    def add_source_file(
        self, path: str | Path, sha256: str, size: int, kind: str, teacher: str | None, run_id: str | None
    ) -> bool:
        """Record an ingested file's digest (taken as it was read). The same (path, digest, teacher) again is a
        no-op; a changed file at the same path is a new row. Returns True if a row was added."""
        if kind not in ("file", "hf_dir"):
            raise ValueError(f"source file kind {kind!r}: use 'file' or 'hf_dir'")
        row = SourceFile(str(path), sha256, size, kind, teacher, run_id, _now())
        return bool(
            self._insert(
                "source_files",
                [asdict(row)],
                """WHERE NOT EXISTS (SELECT 1 FROM source_files s WHERE s.path = b.path AND s.sha256 = b.sha256
                                     AND s.teacher IS NOT DISTINCT FROM b.teacher)""",
            )
        )

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

    # ---- publications ----------------------------------------------------------------------------------

    def record_publication(self, publication: dict[str, Any], items: Sequence[tuple[str, str | None]]) -> bool:
        """Register a published dataset and its (trajectory_id, score_id) items, in one transaction.

        ``publication`` holds the ``publications`` columns but ``created_at`` (``params`` as a dict); an unknown
        column is an error. Call this only once the dataset's files are complete at its ``path`` (rsr.publish
        renames the folder into place first), so a registered publication always points at a whole dataset.
        Returns False (and writes nothing) if its ``dataset_id`` is already registered.
        """
        row = publication | {"path": str(publication["path"]), "params": _json(publication["params"])}
        row["created_at"] = _now()
        items_rows = [{"dataset_id": row["dataset_id"], "trajectory_id": t, "score_id": s} for t, s in items]
        with self._batch(self._arrow("publication_items", items_rows)) as batch, self._tx():
            if not self._count(
                f"INSERT INTO publications BY NAME SELECT {', '.join(f'? AS {c}' for c in row)} ON CONFLICT DO NOTHING",
                list(row.values()),
            ):
                return False
            self._con.execute(f"INSERT INTO publication_items SELECT * FROM {batch}")
        return True

    def get_publication(self, dataset_id: str) -> dict[str, Any] | None:
        cols, rows = self.query("SELECT * FROM publications WHERE dataset_id = ?", [dataset_id])
        if not rows:
            return None
        pub = dict(zip(cols, rows[0], strict=True))
        pub["params"] = json.loads(pub["params"]) if pub["params"] else {}
        return pub

    # ---- read-only queries -----------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run a read query; returns (column names, rows). Meant for SELECTs over the tables and views."""
        cur = self._con.execute(sql, params)
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, cur.fetchall()

    def query_df(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        return self._con.execute(sql, params).df()
