"""Register a benchmark; check every trajectory against every registered benchmark (the decontaminate stage).

The stage checks what is not checked yet against the benchmark set as it is now: new trajectories against every
benchmark, stored ones against a benchmark added since (so registering a benchmark before or after a teacher gives
the same rows). A page of trajectories at a time, each page's checks and hits stored in one transaction, so a run
killed half-way keeps what it stored and the re-run checks only the rest; a re-run with nothing new stores nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rsr.config import BenchmarkSpec
from rsr.curate.benchmarks import is_local, load_benchmark, with_preset
from rsr.curate.decontaminate import (
    BenchmarkProblem,
    DistinctPrompts,
    Matcher,
    benchmark_label,
    check_set_name,
    prompt_segments,
)
from rsr.store.contamination import BenchmarkRow
from rsr.store.writer import Store

CHECK_PAGE = 20_000  # trajectories read, checked and stored per transaction at most ...
PAGE_CHARS = 16 * 1024 * 1024  # ... and their chats' characters at the mean length (long prompts: fewer rows a page)
# DuckDB's cache here: pages read only user turns and a check table, so a small cache costs nothing, and it leaves
# room for the matcher's index (~100 MB for 20,000 problems) within the stage's 1 GB (benchmarks/README.md).
DB_MEMORY = "128MB"
DB_CHECKPOINT = "64MB"  # as the other CPU stages (rsr.stages.curate, whose verifier this stage does not import)


def _open(db: Path) -> Store:
    return Store.open(db, memory_limit=DB_MEMORY, checkpoint=DB_CHECKPOINT)


@dataclass
class Registered:
    """A benchmark as registered, and whether this run added it (else it was there with the same content)."""

    benchmark: BenchmarkRow
    new: bool
    skipped: list[str] = field(default_factory=list)  # rows without a problem text, the first few (file:row: why)


def register_benchmark(db: Path, run_id: str, spec: BenchmarkSpec) -> Registered:
    """Read the benchmark and store its problems. A hub benchmark registered before under this name, source, split,
    config and column is not read again (its revision is pinned: no network needed); a name taken by other content
    is refused (ValueError)."""
    source, column, split, config = with_preset(spec.name, spec.source, spec.problem, spec.split, spec.config)
    with _open(db) as store:
        old = next((b for b in store.benchmarks() if b.name == spec.name), None)
    same_hub = old is not None and old.kind == "hub" and not is_local(source)
    if same_hub and (old.source, old.split, old.config, old.ngram) == (source, split, config, spec.ngram):
        if column in (None, old.problem_column) and spec.revision in (None, old.revision):
            return Registered(old, new=False)
    revision = spec.revision or (old.revision if same_hub and old.source == source else None)
    got = load_benchmark(spec.name, source, column, split, config, revision, spec.ngram)
    row = BenchmarkRow(got.name, got.source, got.kind, got.config, got.split, got.revision, got.column, got.ngram,
                       got.digest, len(got.problems), got.n_skipped, run_id)  # fmt: skip
    with _open(db) as store:
        new = store.register_benchmark(row, got.problems)
        row = next(b for b in store.benchmarks() if b.name == spec.name)
    return Registered(row, new, got.skipped)


@dataclass
class Decontaminated:
    """One decontaminate run: the benchmarks checked against, how many trajectories were checked (and how many
    distinct prompts they hold: each matched once), and per teacher and benchmark the trajectories found to hold
    one of its problems in this run."""

    benchmarks: list[str] = field(default_factory=list)
    checked: int = 0
    prompts: int = 0
    flagged: int = 0
    found: dict[str, dict[str, int]] = field(default_factory=dict)  # teacher -> benchmark -> trajectories


def decontaminate(db: Path, run_id: str) -> Decontaminated:
    """Check every trajectory not yet checked against the registered benchmarks as they are now."""
    with _open(db) as store:
        registered = {benchmark_label(b.name, b.digest, b.ngram): b for b in store.benchmarks()}
        out = Decontaminated([b.name for b in registered.values()])
        target = check_set_name(registered)
        if not registered or not store.n_unchecked(target):
            return out
        store.add_check_set(target, sorted(registered))
        stage = _Stage(store, registered, store.check_sets(), run_id, out)
        page = max(100, min(CHECK_PAGE, int(PAGE_CHARS // max(store.mean_prompt_chars(), 1.0))))
        for start in range(0, store.trajectory_rows(), page):
            if rows := store.unchecked(range(start, start + page), target):
                stage.page(rows, target)
        out.prompts = sum(m.matched for m in stage.matchers.values() if m)
    return out


class _Stage:
    """One run's matchers: per set a trajectory was checked against before, one over the benchmarks it lacks."""

    def __init__(self, store: Store, registered: dict[str, BenchmarkRow], sets: dict, run_id: str, out) -> None:
        self.store, self.registered, self.sets, self.run_id, self.out = store, registered, sets, run_id, out
        self.matchers: dict[str | None, DistinctPrompts | None] = {}

    def missing(self, before: str | None) -> list[BenchmarkRow]:
        had = set(self.sets.get(before) or ())
        return [b for label, b in self.registered.items() if label not in had]

    def matcher(self, before: str | None) -> DistinctPrompts | None:
        if before not in self.matchers:
            names = {b.name: b.ngram for b in self.missing(before)}
            problems = [BenchmarkProblem(name, row, text, names[name])
                        for name, row, text in self.store.benchmark_problems(list(names))]  # fmt: skip
            self.matchers[before] = DistinctPrompts(Matcher(problems)) if problems else None
        return self.matchers[before]

    def page(self, rows: list[tuple], target: str) -> None:
        """One page of Reader.unchecked rows (trajectory_id, teacher, problem, users, checked): matched, stored."""
        groups: dict[str | None, list[tuple]] = defaultdict(list)
        for r in rows:
            groups[r[4]].append(r)
        hits, rechecked = [], []
        for before, group in groups.items():
            matcher = self.matcher(before)
            found = matcher.match([prompt_segments(r[2], r[3]) for r in group]) if matcher else [[]] * len(group)
            for (trajectory_id, teacher, *_), got in zip(group, found, strict=True):
                hits += [{"trajectory_id": trajectory_id, "benchmark": h.benchmark, "benchmark_row": h.row,
                          "method": h.method, "share": h.share, "evidence": h.evidence} for h in got]  # fmt: skip
                for benchmark in sorted({h.benchmark for h in got}):
                    per = self.out.found.setdefault(teacher, {})
                    per[benchmark] = per.get(benchmark, 0) + 1
                self.out.flagged += bool(got)
            if before is not None:
                rechecked += [(r[0], b.name) for r in group for b in self.missing(before)]
        self.store.record_checks(target, [r[0] for r in rows], hits, rechecked, self.run_id,
                                 had_checks=any(before is not None for before in groups))  # fmt: skip
        self.out.checked += len(rows)
