"""Every write to the state database. ``Store.open(path)``: the flow's one writer (it migrates the file; readers
use ``rsr.store.queries.Reader``). Each ``add_*``/``set_*`` call is
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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from rsr.records import Duplicate, Problem, Rejected, Score, Trajectory, Verdict, _digest
from rsr.spec import StudentSpec, options_text, template_digest
from rsr.store import connect as db
from rsr.store.contamination import BenchmarkRow
from rsr.store.queries import IngestCounts, Reader, SourceFile, check_dtype, stored_messages


def _now() -> datetime:
    # TIMESTAMP columns hold naive UTC: DuckDB's TIMESTAMP has no zone, and the session zone must not matter.
    return datetime.now(UTC).replace(tzinfo=None)


def score_id_for(score: Score) -> str:
    """Deterministic id: the score key, plus the error text for failed rows (so distinct failures are kept)."""
    key = (score.trajectory_id, score.student_id, score.metric_version, score.r_max, score.dtype, score.max_tokens)
    return "s-" + _digest(*map(str, (*key, score.error or "")))


def quarantine_id_for(rejected: Rejected) -> str:
    return "q-" + _digest(*map(str, (rejected.source_file, rejected.source_line, rejected.reason, rejected.raw)))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


class Store(Reader):
    """The DuckDB state's one writer: one read-write opener at a time (DuckDB's own rule). Reads as a Reader."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, resources: ExitStack) -> None:
        super().__init__(con, path, None, resources)
        self._schemas: dict[str, pa.Schema] = {}

    @classmethod
    def open(cls, path: str | Path, *, memory_limit: str | None = None, checkpoint: str | None = None) -> Store:
        """Open the database at ``path`` read-write, creating and migrating it; use as a context manager. A stage
        that streams large inputs caps DuckDB's cache (``memory_limit``) and checkpoints less often
        (``checkpoint``): see limit_memory and checkpoint_every."""
        path, resources = Path(path), ExitStack()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            con = resources.enter_context(db.connect(path, read_only=False))
            db.migrate(con, path)
        except BaseException:
            resources.close()
            raise
        store = cls(con, path, resources)
        if memory_limit:
            store.limit_memory(memory_limit)
        if checkpoint:
            store.checkpoint_every(checkpoint)
        return store

    def limit_memory(self, size: str) -> None:
        """Cap DuckDB's block cache (default: 80% of RAM), so a large input's cache does not set the process size."""
        if not size.removesuffix("B")[:-1].isdigit():
            raise ValueError(f"memory limit {size!r}: give a size such as '768MB'")
        self._con.execute(f"SET memory_limit = '{size}'")

    def checkpoint_every(self, size: str) -> None:
        """Checkpoint once this much has gone into the write-ahead log (DuckDB's default: 16 MB). Each checkpoint
        rewrites the table's last, partly filled row group, so with long texts frequent ones cost time and memory."""
        if not size.removesuffix("B")[:-1].isdigit():
            raise ValueError(f"checkpoint threshold {size!r}: give a size such as '64MB'")
        self._con.execute(f"SET checkpoint_threshold = '{size}'")

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

    def mark_interrupted_runs(self) -> list[str]:
        """Runs left "running" by a process that died (SIGKILL, OOM, power loss) become "interrupted".

        Call only while holding the state folder's writer lock as its outermost holder: then no other flow can
        be running, so every "running" row is stale. Returns the Prefect flow-run ids of the rows marked (those
        that have one), so that the same runs can be marked crashed in Prefect (rsr_deployments.recovery)."""
        rows = self._con.execute(
            "UPDATE runs SET status = 'interrupted' WHERE status = 'running' RETURNING prefect_flow_run_id"
        ).fetchall()
        return [r[0] for r in rows if r[0]]

    def set_run_mlflow(self, run_id: str, mlflow_run_id: str) -> None:
        self._con.execute("UPDATE runs SET mlflow_run_id = ? WHERE run_id = ?", [mlflow_run_id, run_id])

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
                row["messages"] = _json(stored_messages(row["messages"], row["response"]))  # the response once
                # the schemas in the file's key order: templates print them (`tools | tojson`), so a sorted copy would
                # render, score and publish another text than `rsr score` reads from the file (the id sorts them)
                row["tools"] = None if row["tools"] is None else json.dumps(row["tools"], ensure_ascii=False)
        return self._insert("trajectories", rows.values(), "ON CONFLICT DO NOTHING")

    def add_rejected(self, rejected: Sequence[Rejected], run_id: str | None) -> int:
        """Quarantine rejected records; the same (file, line, reason, raw) twice is a no-op. Returns # new."""
        now = _now()
        rows = {
            quarantine_id_for(r): {"quarantine_id": quarantine_id_for(r), **r.model_dump(), "run_id": run_id}
            | {"quarantined_at": now}
            for r in rejected
        }
        return self._insert("quarantine", rows.values(), "ON CONFLICT DO NOTHING")

    def add_ingest_counts(self, run_id: str, teacher: str, counts: IngestCounts) -> None:
        """How one source's records were accounted for in this run (ingest_log): records = stored + repeats +
        quarantined. The same run, teacher and source again replaces its row."""
        row = asdict(counts) | {"run_id": run_id, "teacher": teacher, "logged_at": _now()}
        row["fields"] = _json(row["fields"])
        self._insert("ingest_counts", [row], verb="INSERT OR REPLACE")

    def merge_run_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Add what a run learnt as it went (e.g. the format detected and the columns read) to its params."""
        self._con.execute(
            "UPDATE runs SET params = json_merge_patch(coalesce(params, '{}'), ?) WHERE run_id = ?",
            [_json(params), run_id],
        )

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
        rows = {v.trajectory_id: {**v.model_dump(), "run_id": run_id, "verified_at": now} for v in verdicts}
        self._insert("verdicts", rows.values(), verb="INSERT OR REPLACE")

    def register_student(
        self,
        student_id: str,
        ref: str,
        digest: str | None,
        info: dict[str, Any] | None = None,
        spec: StudentSpec | None = None,
        template: str | None = None,
    ) -> None:
        """Register (or refresh) a student: its id, ref and digest, what Student.info() said (`info`), and from
        `spec` how it is named (revision, template name, options); `template` is the effective template's text,
        kept once by content. registered_at keeps the first registration time."""
        info = info or {}
        spec = spec or StudentSpec(ref=ref)
        digest_of = template_digest(template) if template is not None else None
        if template is not None:
            self._con.execute(
                "INSERT INTO chat_templates VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [digest_of, template, _now()]
            )
        self._con.execute(
            """INSERT INTO students (student_id, ref, digest, info, registered_at, revision, dtype, template_name,
                   template_digest, chat_template_kwargs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (student_id) DO UPDATE SET ref = excluded.ref, digest = excluded.digest,
                info = excluded.info, revision = excluded.revision, dtype = excluded.dtype,
                template_name = excluded.template_name, template_digest = excluded.template_digest,
                chat_template_kwargs = excluded.chat_template_kwargs""",
            [student_id, ref, digest, _json(info), _now(), spec.revision, info.get("dtype"), spec.template_name,
             digest_of, options_text(spec.chat_template_kwargs)],
        )  # fmt: skip

    def add_scores(self, scores: Sequence[Score], run_id: str | None) -> int:
        """Append scores whose key has no successful row yet (and whose score_id is new). Returns # inserted.

        Every score must name its compute dtype (``Score.dtype``): a ValueError otherwise, nothing stored."""
        now = _now()
        rows: dict[str, dict[str, Any]] = {}
        for s in scores:
            check_dtype(s.dtype)
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

    def fill_metrics(self, scores: Sequence[Score]) -> int:
        """Give the companion metrics (entropy, top-1) of fresh ``scores`` to the stored successful rows of the same
        key that were scored before they existed (NULL there): the row keeps its id, its RSR and its time, so
        nothing that selected or published it changes. Returns how many rows were filled."""
        rows = [
            {"score_id": score_id_for(s), **s.model_dump(), "scored_at": _now()}
            for s in scores
            if s.error is None and s.mean_entropy is not None
        ]
        batch = self._arrow("scores", rows)
        if not batch.num_rows:
            return 0
        with self._batch(batch) as name:
            return self._count(
                f"""UPDATE scores SET sum_entropy = b.sum_entropy, mean_entropy = b.mean_entropy, n_top1 = b.n_top1,
                    top1_share = b.top1_share
                FROM {name} b
                WHERE scores.trajectory_id = b.trajectory_id AND scores.student_id = b.student_id
                  AND scores.metric_version = b.metric_version AND scores.r_max = b.r_max AND scores.dtype = b.dtype
                  AND scores.max_tokens IS NOT DISTINCT FROM b.max_tokens AND scores.error IS NULL
                  AND scores.mean_entropy IS NULL"""
            )

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

    # ---- decontamination ------------------------------------------------------------------------------------

    def register_benchmark(self, row: BenchmarkRow, problems: Sequence[tuple[int, str]]) -> bool:
        """Register a benchmark and its problems in one transaction; returns False if it was registered already. The
        same name with the same content (digest) and n is a no-op; with other content or another n it is refused
        (ValueError, nothing written): a name means one set of problems, so every hit stays explainable."""
        old = next((b for b in self.benchmarks() if b.name == row.name), None)
        if old is not None:
            if (old.digest, old.ngram) == (row.digest, row.ngram):
                return False
            what = "other content" if old.digest != row.digest else f"n = {old.ngram} (not {row.ngram})"
            raise ValueError(
                f"benchmark {row.name!r} is registered with {what}: {old.n_problems} problems from {old.source} "
                f"(digest {old.digest[:12]}), this one {row.n_problems} from {row.source} (digest {row.digest[:12]}); "
                "refused: add it under another name"
            )
        values = asdict(row) | {"added_at": row.added_at or _now()}
        batch = pa.table({"benchmark_row": [r for r, _ in problems], "text": [t for _, t in problems]})
        with self._batch(batch) as name, self._tx():
            self._con.execute(f"INSERT INTO benchmarks BY NAME SELECT {', '.join(f'? AS {c}' for c in values)}",
                              list(values.values()))  # fmt: skip
            self._con.execute(f"INSERT INTO benchmark_problems SELECT ?, benchmark_row, text FROM {name}", [row.name])
        return True

    def add_check_set(self, checked: str, labels: Sequence[str]) -> None:
        self._con.execute(
            "INSERT INTO contamination_check_sets VALUES (?, ?) ON CONFLICT DO NOTHING", [checked, list(labels)]
        )

    def record_checks(
        self,
        checked: str,
        ids: Sequence[str],
        hits: Sequence[dict[str, Any]],
        rechecked: Sequence[tuple[str, str]] = (),
        run_id: str | None = None,
        had_checks: bool = False,
    ) -> int:
        """One page of the decontaminate stage, in one transaction: these trajectories are now checked against the set
        `checked` (`had_checks`: some were checked against another set before), with the hits found
        (contamination_hits columns but run_id and found_at); a trajectory checked again against a benchmark
        (`rechecked`: (trajectory_id, benchmark)) has its earlier hits of that benchmark replaced. Returns how many
        hits were inserted."""
        now = _now()
        pairs = pa.schema([("trajectory_id", pa.string()), ("benchmark", pa.string())])
        again = pa.Table.from_pylist([{"trajectory_id": t, "benchmark": b} for t, b in rechecked], schema=pairs)
        page = pa.table({"trajectory_id": pa.array(list(ids), pa.string())})
        found = self._arrow("contamination_hits", [h | {"run_id": run_id, "found_at": now} for h in hits])
        with ExitStack() as names:
            ids_name, again_name, hits_name = (names.enter_context(self._batch(b)) for b in (page, again, found))
            with self._tx():
                if rechecked:
                    self._con.execute(f"""DELETE FROM contamination_hits h USING {again_name} r
                        WHERE h.trajectory_id = r.trajectory_id AND h.benchmark = r.benchmark""")  # fmt: skip
                if had_checks:
                    self._con.execute(f"DELETE FROM contamination_checks WHERE trajectory_id IN (FROM {ids_name})")
                insert = f"INSERT INTO contamination_checks SELECT trajectory_id, ? FROM {ids_name}"
                self._con.execute(insert, [checked])
                return self._count(f"INSERT INTO contamination_hits FROM {hits_name} ON CONFLICT DO NOTHING")
