"""Ingest, deduplicate, verify: the CPU stages, each reading what the previous one stored (by id).

Each works a chunk at a time and stores each chunk in its own transaction before reading the next, so memory stays
flat however large the input, and a run killed half-way keeps what it stored: ids are content hashes, so the
re-run stores each record exactly once and only redoes what was not stored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rsr.curate.dedup import DEFAULT_THRESHOLD, find_duplicates
from rsr.curate.ingest import CHUNK_BYTES, IngestResult, input_digest, iter_ingest, reason_pattern
from rsr.curate.verify import DEFAULT_TIMEOUT_S, verify_many
from rsr.store.queries import IngestCounts
from rsr.store.writer import Store

# DuckDB keeps every block it wrote or read cached up to its memory limit (default: 80% of RAM), so over a large
# input its cache, not our chunks, would set the process's size; the CPU stages cap it (it spills past the cap).
# Chosen with the ingest's chunks (rsr.curate.ingest.CHUNK_BYTES, 8 MB of text): inserting a chunk needs ~8x its
# text inside this limit, and one record of up to 16 MB still fits (an 8 MB trace measured; benchmarks/README.md).
DB_MEMORY = "256MB"
# A checkpoint rewrites the last, partly filled row group (up to ~100 MB of long traces): at DuckDB's default
# (every 16 MB of log, about every chunk) ingest spent most of its time and its peaks there. Every 64 MB of log, 4x
# fewer, and the log's data still fits well within DB_MEMORY (benchmarks/README.md).
DB_CHECKPOINT = "64MB"
DEDUP_PROBLEMS = 5000  # problems (with all their teachers' trajectories) deduplicated per page at most
DEDUP_RANGES = 32  # row ranges one dedup page reads at most (a short query; nearby rows are read together)
VERIFY_CHUNK = 5000  # trajectories verified and stored per page at most


def _open(db: Path) -> Store:
    return Store.open(db, memory_limit=DB_MEMORY, checkpoint=DB_CHECKPOINT)


@dataclass
class Ingested:
    """One teacher's input, read: counts (records = read + repeats + quarantined, per source in `sources`), how
    each source was read (`plans`), the three commonest quarantine reasons (each with its first example and count)
    and the problems it touched (what dedup reads next)."""

    teacher: str
    path: str
    records: int = 0
    read: int = 0  # stored: distinct trajectories of the input, new or already stored by an earlier run
    repeats: int = 0  # exact repeats of an earlier record of the same source
    new: int = 0
    quarantined: int = 0
    quarantined_new: int = 0
    no_gold: int = 0
    dropped_turns: int = 0  # turns after the last assistant turn of their records (agent trajectories), dropped
    sources: list[IngestCounts] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)  # "<source>: format F; field <- column, ..."
    top_reasons: list[tuple[str, int]] = field(default_factory=list)
    problem_ids: list[str] = field(default_factory=list)


def ingest_teacher(
    db: Path,
    run_id: str,
    teacher: str,
    path: str,
    fmt: str | None = None,
    mapping: dict[str, str] | None = None,
    problems: str | None = None,
    hf_options: dict[str, str] | None = None,
) -> Ingested:
    """Read one teacher's input into DuckDB; bad records go to quarantine, good ones are never lost, and each
    source's records are accounted for in ingest_log (its format and columns also in the run's params).

    The input's digest is recorded (lineage) under each source name its records carry (an HF dataset's splits
    are "<dir>[split]")."""
    out = Ingested(teacher, str(path))
    problem_ids: set[str] = set()
    reasons: Counter[str] = Counter()
    examples: dict[str, str] = {}
    by_source: dict[str, _Tally] = {}
    digest = input_digest(Path(path)) if Path(path).exists() else None  # None: a hub id, digested by its files
    with _open(db) as store:
        for chunk in iter_ingest(
            path, teacher=teacher, fmt=fmt, mapping=mapping, problems=problems, hf_options=hf_options
        ):
            store.upsert_problems(chunk.problems)
            out.new += store.add_trajectories(chunk.trajectories, run_id)
            out.quarantined_new += store.add_rejected(chunk.rejected, run_id)
            out.no_gold += sum(1 for t in chunk.trajectories if t.gold_answer is None)
            for r in chunk.rejected:  # counted by pattern over the whole input, each shown by its first example
                key = reason_pattern(r.reason)
                reasons[key] += 1
                examples.setdefault(key, f"{r.source_file}:{r.source_line}: {r.reason}")
            problem_ids.update(t.problem_id for t in chunk.trajectories)
            _account(by_source, chunk)
        _log_sources(store, run_id, out, by_source)
        if digest is not None:
            for name in sorted({*by_source, str(path)}):
                store.add_source_file(name, digest.sha256, digest.size, digest.kind, teacher, run_id)
    out.top_reasons = [(examples[key], n) for key, n in reasons.most_common(3)]
    if not out.read:  # the quarantine is stored for inspection, but a run on nothing is no success
        why = "; ".join(f"{n} x {reason}" for reason, n in out.top_reasons) or "the input holds no records"
        raise ValueError(
            f"{path}: no trajectory read for teacher {teacher!r} ({out.quarantined} records quarantined: {why}); "
            'see `rsr sql "SELECT source_line, reason FROM quarantine"` and docs/formats.md (--format, --map)'
        )
    out.problem_ids = sorted(problem_ids)
    return out


@dataclass
class _Tally:
    """One source's counts so far, and how it is read."""

    stored: int = 0
    repeats: int = 0
    quarantined: int = 0
    dropped_turns: int = 0
    chunk: IngestResult | None = None  # its latest chunk: the format, fields and plan


def _account(by_source: dict[str, _Tally], chunk: IngestResult) -> None:
    """Add a chunk's counts to its source's (records = stored + repeats + quarantined)."""
    tally = by_source.setdefault(chunk.source, _Tally())
    tally.stored += len(chunk.trajectories)
    tally.repeats += chunk.duplicates_skipped
    tally.quarantined += len(chunk.rejected)
    tally.dropped_turns += chunk.dropped_turns
    tally.chunk = IngestResult(source=chunk.source, format=chunk.format, fields=chunk.fields, plan=chunk.plan)


def _log_sources(store: Store, run_id: str, out: Ingested, by_source: dict[str, _Tally]) -> None:
    """Each source's accounting into ingest_log and the Ingested totals; how it was read into the run's params."""
    read_as = {}
    for source, t in by_source.items():
        how = t.chunk or IngestResult()
        records = t.stored + t.repeats + t.quarantined
        counts = IngestCounts(
            source, records, t.stored, t.repeats, t.quarantined, how.format, how.fields, t.dropped_turns
        )
        store.add_ingest_counts(run_id, out.teacher, counts)
        out.sources.append(counts)
        out.plans.append(f"{source}: {how.plan}")
        read_as[source] = {"teacher": out.teacher, "format": how.format, "fields": how.fields}
        out.records += records
        out.read += t.stored
        out.repeats += t.repeats
        out.quarantined += t.quarantined
        out.dropped_turns += t.dropped_turns
    store.merge_run_params(run_id, {"read_as": read_as})


def deduplicate(db: Path, run_id: str, problem_ids: list[str], threshold: float = DEFAULT_THRESHOLD) -> int:
    """Exact + near duplicates among all teachers' trajectories of these problems, first-ingested kept.
    Duplicates only meet within a problem, so problems are read and stored a page at a time: DEDUP_PROBLEMS
    problems or CHUNK_BYTES of response text, whichever comes first (a problem is never split)."""
    found = 0
    with _open(db) as store:
        for page, rows in _pages(store.response_rows(problem_ids)):
            duplicates = find_duplicates(store.responses(page, rows), threshold=threshold)
            store.set_duplicates(duplicates, run_id)
            found += len(duplicates)
    return found


def _pages(rows: list[tuple[str, int, int]]) -> list[tuple[list[str], list[range]]]:
    """Dedup's pages of (problem_id, row position, characters) rows: problems in the order their first row sits,
    so that a page's rows lie close together, each page with the row ranges that hold its rows."""
    where: dict[str, list[int]] = {}
    sizes: Counter[str] = Counter()
    for pid, rowid, chars in rows:
        where.setdefault(pid, []).append(rowid)
        sizes[pid] += chars
    pages: list[list[str]] = [[]]
    text = 0
    for pid in sorted(where, key=lambda p: min(where[p])):
        if pages[-1] and (len(pages[-1]) >= DEDUP_PROBLEMS or text + sizes[pid] > CHUNK_BYTES):
            pages.append([])
            text = 0
        pages[-1].append(pid)
        text += sizes[pid]
    return [(page, _ranges(sorted(r for p in page for r in where[p]))) for page in pages if page]


def _ranges(rowids: list[int], most: int = DEDUP_RANGES) -> list[range]:
    """Sorted row positions as at most `most` ranges: split at the widest gaps (nearby runs read as one)."""
    widest = sorted(range(1, len(rowids)), key=lambda i: rowids[i] - rowids[i - 1], reverse=True)[: most - 1]
    cuts = sorted(i for i in widest if rowids[i] - rowids[i - 1] > 1)
    bounds = [0, *cuts, len(rowids)]
    return [range(rowids[a], rowids[b - 1] + 1) for a, b in zip(bounds, bounds[1:], strict=False)]


def verify_answers(db: Path, run_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Verdicts for every trajectory not yet verified (or whose gold answer arrived since), a page of rows at a
    time: VERIFY_CHUNK rows, fewer when responses are long (CHUNK_BYTES of text at the mean length)."""
    done = 0
    with _open(db) as store:
        page = max(100, min(VERIFY_CHUNK, int(CHUNK_BYTES // max(store.mean_response_chars(), 1.0))))
        for start in range(0, store.trajectory_rows(), page):
            rows = store.unverified(range(start, start + page))
            if rows:
                store.set_verdicts(verify_many(rows, timeout_s=timeout_s), run_id)
                done += len(rows)
    return done
