"""The decontaminate stage on real DuckDB files (the tasks' functions, without the Prefect engine): registering a
benchmark before or after a teacher gives the same `contamination` rows, a re-run stores nothing twice, flagged
trajectories are neither scored nor candidates, and a real ZeroEval teacher's MATH-500 problems are all found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsr.config import BenchmarkSpec
from rsr.curate.ingest import ingest_file
from rsr.metric import METRIC_VERSION
from rsr.records import Score, normalize_text
from rsr.store.writer import Store
from rsr_tasks.decontaminate import decontaminate, register_benchmark

# A benchmark of ours, and two teachers' chats: some hold its problems (verbatim, numbers changed, inside a longer
# request, in a later user turn), some do not.
BENCH = [
    "A farmer has 120 sheep and sells one third of them at the market. He then buys 15 lambs from his neighbour. "
    "How many sheep and lambs does the farmer have now?",
    "Maria reads 25 pages of her book every weekday and 40 pages on each day of the weekend. How many pages does "
    "she read in two full weeks?",
    "How many edges does a cube have?",
]
PROMPTS = [
    [BENCH[0]],
    [BENCH[1].replace("25", "30").replace("40", "45")],
    ["Hi! Please help with my homework, I am stuck. " + BENCH[1].lower() + " Thanks a lot."],
    ["Let us warm up first.", BENCH[2]],  # multi-turn: the problem in the second user turn
    ["A baker has 80 loaves and sells half of them before noon. How many loaves are left at closing time?"],
    ["What is the product of two consecutive odd integers whose sum is 24?"],
]
FLAGGED = {0: (0, "exact"), 1: (1, "ngram_numbers"), 2: (1, "ngram"), 3: (2, "exact")}  # prompt -> (row, method)


def _teacher_file(tmp_path: Path) -> Path:
    lines = []
    for teacher in ("alpha", "beta"):
        for i, turns in enumerate(PROMPTS):
            chat = []
            for text in turns:
                chat += [{"role": "user", "content": text}, {"role": "assistant", "content": f"{teacher} on {i}"}]
            lines.append(json.dumps({"teacher": teacher, "messages": chat}))
    path = tmp_path / "teachers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _bench_file(tmp_path: Path, problems: list[str] = BENCH, name: str = "bench.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps({"question": p}) + "\n" for p in problems))
    return path


def _ingest(db: Path, teachers: Path) -> None:
    with Store.open(db) as store:
        store.add_trajectories(ingest_file(teachers).trajectories, store.start_run("curate-teacher", {}))


def _rows(db: Path) -> list[tuple]:
    with Store.open(db) as store:
        return store.query(
            "SELECT trajectory_id, teacher, benchmark, benchmark_row, method, evidence, share FROM contamination "
            "ORDER BY ALL"
        )[1]


def test_registering_the_benchmark_before_or_after_the_teacher_gives_the_same_rows(tmp_path: Path) -> None:
    teachers, bench = _teacher_file(tmp_path), _bench_file(tmp_path)
    spec = BenchmarkSpec(name="ours", source=str(bench))
    after, before = tmp_path / "after" / "rsr.duckdb", tmp_path / "before" / "rsr.duckdb"
    _ingest(after, teachers)
    assert register_benchmark.fn(after, "r-1", spec).new
    found = decontaminate.fn(after, "r-1")
    assert (found.checked, found.prompts, found.flagged) == (12, 6, 8)
    assert found.found == {"alpha": {"ours": 4}, "beta": {"ours": 4}}

    assert register_benchmark.fn(before, "r-1", spec).new
    assert decontaminate.fn(before, "r-1").checked == 0  # nothing stored yet
    _ingest(before, teachers)
    assert decontaminate.fn(before, "r-2").flagged == 8
    rows = _rows(after)
    assert rows == _rows(before) and len(rows) == 8
    with Store.open(after) as store:
        by_prompt = {t.trajectory_id: PROMPTS.index([m.content for m in t.messages if m.role == "user"])
                     for t in store.get_trajectories()}  # fmt: skip
        log = store.query("SELECT teacher, benchmark, trajectories, problems, exact, ngram, ngram_numbers "
                          "FROM contamination_log ORDER BY teacher")[1]  # fmt: skip
    rows_of = {(by_prompt[t], teacher): (row, method) for t, teacher, _, row, method, _, _ in rows}
    assert rows_of == {(i, teacher): (row + 1, method) for i, (row, method) in FLAGGED.items()
                       for teacher in ("alpha", "beta")}  # JSONL rows count from 1 # fmt: skip
    assert log == [("alpha", "ours", 4, 4, 2, 1, 1), ("beta", "ours", 4, 4, 2, 1, 1)]


def test_a_rerun_stores_nothing_twice_and_a_new_benchmark_checks_only_itself(tmp_path: Path) -> None:
    db = tmp_path / "rsr.duckdb"
    _ingest(db, _teacher_file(tmp_path))
    spec = BenchmarkSpec(name="ours", source=str(_bench_file(tmp_path)))
    register_benchmark.fn(db, "r-1", spec)
    decontaminate.fn(db, "r-1")
    first = _rows(db)
    again = register_benchmark.fn(db, "r-2", spec)
    assert not again.new and again.benchmark.n_problems == 3  # the same content: a no-op
    assert decontaminate.fn(db, "r-2").checked == 0 and _rows(db) == first
    other = _bench_file(tmp_path, [BENCH[0], "Something else entirely, not in any prompt at all."], "other.jsonl")
    with pytest.raises(ValueError, match="'ours' is registered with other content: 3 problems from .* refused"):
        register_benchmark.fn(db, "r-3", BenchmarkSpec(name="ours", source=str(other)))
    with pytest.raises(ValueError, match=r"registered with n = 8 \(not 13\)"):
        register_benchmark.fn(db, "r-3", spec.model_copy(update={"ngram": 13}))
    assert register_benchmark.fn(db, "r-3", BenchmarkSpec(name="second", source=str(other))).new
    checked = decontaminate.fn(db, "r-3")  # every trajectory again, against the new benchmark only
    assert (checked.checked, checked.flagged) == (12, 2)
    with Store.open(db) as store:
        assert store.query("SELECT count(*), count(DISTINCT checked) FROM contamination_checks")[1] == [(12, 1)]
        assert store.query("SELECT count(*) FROM contamination_hits WHERE run_id = 'r-1'")[1] == [(8,)]
        assert store.contamination_counts() == {"ours": (8, 5), "second": (2, 1)}  # a chat's earlier turns: its id


def test_flagged_trajectories_are_neither_scored_nor_candidates_unless_asked(tmp_path: Path) -> None:
    db = tmp_path / "rsr.duckdb"
    _ingest(db, _teacher_file(tmp_path))
    register_benchmark.fn(db, "r-1", BenchmarkSpec(name="ours", source=str(_bench_file(tmp_path))))
    decontaminate.fn(db, "r-1")
    with Store.open(db) as store:
        flagged = {r[0] for r in store.query("SELECT trajectory_id FROM contamination")[1]}
        every = {t.trajectory_id for t in store.get_trajectories()}
        key = {"dtype": "float32", "max_tokens": 100}
        assert set(store.unscored("stu", METRIC_VERSION, 100, **key)) == every - flagged
        assert set(store.unscored("stu", METRIC_VERSION, 100, **key, include_contaminated=True)) == every
        store.register_student("stu", "tiny", "dg", {})
        scores = [Score(trajectory_id=t, student_id="stu", metric_version=METRIC_VERSION, r_max=100, dtype="float32",
                        max_tokens=100, n_tokens=5, sum_rank=5, sum_surprisal=5, rsr=1.0, mean_rank=1.0,
                        mean_surprisal=1.0) for t in every]  # fmt: skip
        store.add_scores(scores, "r-2")
        assert {c.trajectory_id for c in store.candidates("stu")} == every - flagged
        assert {c.trajectory_id for c in store.candidates("stu", include_contaminated=True)} == every
        board = store.teacher_board("stu", store.current_setting("stu"), None)
    assert board.set_index("teacher")["n_contaminated"].to_dict() == {"alpha": 4, "beta": 4}


def test_a_zeroeval_teacher_against_shared_math500_flags_every_leaked_problem(tmp_path: Path, shared_data) -> None:
    db = tmp_path / "rsr.duckdb"
    _ingest(db, shared_data / "zeroeval-math-l5" / "gpt-4o-2024-08-06.json")
    math500 = shared_data / "problems" / "math500.jsonl"
    register_benchmark.fn(db, "r-1", BenchmarkSpec(name="math500", source=str(math500)))
    found = decontaminate.fn(db, "r-1")
    texts = {normalize_text(json.loads(line)["problem"]) for line in math500.read_text().splitlines()}
    with Store.open(db) as store:
        leaked = {t.trajectory_id for t in store.get_trajectories() if normalize_text(t.problem) in texts}
        methods = dict(store.query("SELECT trajectory_id, min(method) FROM contamination GROUP BY 1")[1])
    assert len(leaked) == 74  # the normalised exact matches
    assert all(methods.get(t) == "exact" for t in leaked)
    # n-grams find 6 more: MATH-500 problems with numbers or a figure's size changed, one sibling of the same
    # template, one that shares only a long boilerplate reminder (docs/decontamination.md)
    assert found.flagged == len(methods) == 80


def test_a_hub_benchmark_is_read_at_the_revision_resolved_then_pinned(tmp_path: Path, monkeypatch) -> None:
    """The hub cannot be reached here: its two calls are replaced (the commit a branch points at, the dataset read
    at a revision); everything else is real. A preset is read at the commit resolved when it is added, that commit
    is recorded, and adding it again reads nothing (no network needed); a named revision is read as named."""
    import datasets
    import huggingface_hub

    calls: list[tuple] = []

    class Info:
        sha = "c0ffee" * 6 + "abcd"  # the main branch's commit

    def dataset_info(self, repo_id, revision=None, **kw):
        calls.append(("info", repo_id, revision))
        return type("Info", (), {"sha": Info.sha if revision is None else f"{revision}-commit"})()

    def load_dataset(path, name=None, split=None, revision=None, **kw):
        calls.append(("load", path, name, split, revision))
        rows = BENCH[:2] if revision == Info.sha else BENCH[1:]  # another commit, other problems
        return datasets.Dataset.from_list([{"question": q} for q in rows])

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    db = tmp_path / "rsr.duckdb"
    got = register_benchmark.fn(db, "r-1", BenchmarkSpec(name="gsm8k"))
    assert (got.new, got.benchmark.kind, got.benchmark.source, got.benchmark.revision) == (
        True, "hub", "openai/gsm8k", Info.sha
    )  # fmt: skip
    assert calls == [("info", "openai/gsm8k", None), ("load", "openai/gsm8k", "main", "test", Info.sha)]
    calls.clear()
    assert not register_benchmark.fn(db, "r-2", BenchmarkSpec(name="gsm8k")).new and calls == []  # pinned
    with pytest.raises(ValueError, match="'gsm8k' is registered with other content"):  # another revision, named
        register_benchmark.fn(db, "r-3", BenchmarkSpec(name="gsm8k", revision="v2"))
    assert calls == [("info", "openai/gsm8k", "v2"), ("load", "openai/gsm8k", "main", "test", "v2-commit")]
    assert (
        register_benchmark.fn(
            db, "r-3", BenchmarkSpec(name="gsm8k-v2", source="openai/gsm8k", revision="v2", split="test", config="main")
        ).benchmark.n_problems
        == 2
    )
