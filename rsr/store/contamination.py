"""The decontamination reads (Reader has them): the benchmarks registered, what each trajectory was checked
against, what was found. The writes are Store's (register_benchmark, add_check_set, record_checks); the tables and
views are migration 008's (docs/sql.md, docs/decontamination.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb


@dataclass(frozen=True)
class BenchmarkRow:
    """A registered benchmark (the benchmarks table): where its problems came from, how many, their digest."""

    name: str
    source: str
    kind: str  # file | hf_dir | hub
    config: str | None
    split: str | None
    revision: str | None
    problem_column: str
    ngram: int
    digest: str
    n_problems: int
    n_skipped: int = 0
    run_id: str | None = None
    added_at: datetime | None = None


def not_contaminated(alias: str) -> str:
    """SQL: the trajectory `alias` holds no benchmark problem, or its `?` parameter (include_contaminated) is true."""
    return f"(? OR NOT EXISTS (SELECT 1 FROM contamination_hits h WHERE h.trajectory_id = {alias}.trajectory_id))"


class ContaminationReads:
    """Reader's decontamination reads (a mixin: it reads through the Reader's connection)."""

    _con: duckdb.DuckDBPyConnection

    def benchmarks(self) -> list[BenchmarkRow]:
        """Every registered benchmark, in the order they were added."""
        cur = self._con.execute(
            f"SELECT {', '.join(BenchmarkRow.__dataclass_fields__)} FROM benchmarks ORDER BY added_at, name"
        )
        return [BenchmarkRow(*row) for row in cur.fetchall()]

    def benchmark_problems(self, names: Sequence[str]) -> list[tuple[str, int, str]]:
        """(benchmark, row, text) of these benchmarks' problems, in row order."""
        return self._con.execute(
            """SELECT benchmark, benchmark_row, text FROM benchmark_problems
            WHERE list_contains(CAST(? AS VARCHAR[]), benchmark) ORDER BY benchmark, benchmark_row""",
            [list(names)],
        ).fetchall()

    def check_sets(self) -> dict[str, list[str]]:
        """Each set of benchmark labels trajectories were checked against, by its name (contamination_checks)."""
        return dict(self._con.execute("SELECT checked, labels FROM contamination_check_sets").fetchall())

    def n_unchecked(self, checked: str) -> int:
        """Trajectories not checked against exactly the benchmark set `checked` (new ones, or checked before a
        benchmark was added)."""
        return int(
            self._con.execute(
                """SELECT count(*) FROM trajectories t
                LEFT JOIN contamination_checks c ON c.trajectory_id = t.trajectory_id
                WHERE c.checked IS DISTINCT FROM ?""",
                [checked],
            ).fetchall()[0][0]
        )

    def mean_prompt_chars(self) -> float:
        """The mean length of a stored chat less its response (the response is kept apart): what sizes the
        decontaminate stage's pages by bytes."""
        return float(self._con.execute("SELECT coalesce(avg(length(messages)), 0) FROM trajectories").fetchall()[0][0])

    def unchecked(self, rows: range, checked: str) -> list[tuple[str, str, str, list[str | None], str | None]]:
        """(trajectory_id, teacher, problem, user turns' texts, the set it was checked against or None) of the
        trajectories at these row positions not checked against the set `checked`. Plain tuples: a page is tens of
        thousands of rows."""
        return self._con.execute(
            """SELECT t.trajectory_id, t.teacher, t.problem,
                [m.content FOR m IN from_json(t.messages, '[{"role": "VARCHAR", "content": "VARCHAR"}]')
                 IF m.role = 'user'] AS users, c.checked
            FROM trajectories t
            LEFT JOIN contamination_checks c ON c.trajectory_id = t.trajectory_id
            WHERE t.rowid >= ? AND t.rowid < ? AND c.checked IS DISTINCT FROM ?""",
            [rows.start, rows.stop, checked],
        ).fetchall()

    def contamination_counts(self) -> dict[str, tuple[int, int]]:
        """Per registered benchmark: (trajectories, problems) found to hold one of its problems, every teacher."""
        found = dict.fromkeys((b.name for b in self.benchmarks()), (0, 0))
        rows = self._con.execute(
            """SELECT benchmark, count(DISTINCT trajectory_id), count(DISTINCT problem_id) FROM contamination
            GROUP BY benchmark"""
        ).fetchall()
        return found | {name: (int(n), int(p)) for name, n, p in rows}

    def contaminated_publications(self) -> list[tuple[str, str, int]]:
        """(name, dataset_id, trajectories holding a benchmark problem) of each dataset's newest publication (per name
        and student) that holds any: published before the benchmark was registered."""
        return self._con.execute(
            """SELECT p.name, p.dataset_id, count(DISTINCT i.trajectory_id)
            FROM publications p
            JOIN publication_items i ON i.dataset_id = p.dataset_id
            JOIN contamination_hits h ON h.trajectory_id = i.trajectory_id
            WHERE p.created_at = (SELECT max(q.created_at) FROM publications q
                                  WHERE q.name = p.name AND q.student_id = p.student_id)
            GROUP BY p.name, p.dataset_id ORDER BY p.name"""
        ).fetchall()

    def n_contaminated(self) -> int:
        """Trajectories holding a problem of any benchmark."""
        return int(self._con.execute("SELECT count(DISTINCT trajectory_id) FROM contamination_hits").fetchall()[0][0])
