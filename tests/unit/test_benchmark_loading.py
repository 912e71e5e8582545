"""Benchmarks read from whatever form ingest reads (rsr.curate.benchmarks), their content digest, and bad input said
in one line: a missing problem column names the columns there are, an empty benchmark is refused, a hub id without
network says what to do."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pandas as pd
import pytest

from rsr.curate.benchmarks import PRESETS, HubUnreachable, load_benchmark, with_preset

ROWS = [
    {"id": 1, "question": "What is the sum of the first ten positive integers?", "answer": "55"},
    {"id": 2, "question": "How many edges does a cube have?", "answer": "12"},
]


def _files(tmp_path: Path) -> dict[str, Path]:
    lines = "".join(json.dumps(r) + "\n" for r in ROWS)
    out = {"jsonl": tmp_path / "b.jsonl", "gz": tmp_path / "b.jsonl.gz", "json": tmp_path / "b.json"}
    out["jsonl"].write_text(lines)
    out["gz"].write_bytes(gzip.compress(lines.encode()))
    out["json"].write_text(json.dumps(ROWS))
    frame = pd.DataFrame(ROWS)
    out["csv"], out["parquet"] = tmp_path / "b.csv", tmp_path / "b.parquet"
    frame.to_csv(out["csv"], index=False)
    frame.to_parquet(out["parquet"])
    out["saved"] = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(out["saved"]))
    return out


def test_every_form_ingest_reads_gives_the_same_problems(tmp_path: Path) -> None:
    files = _files(tmp_path)
    got = {kind: load_benchmark("b", str(path)) for kind, path in files.items()}
    texts = [r["question"] for r in ROWS]
    for kind, b in got.items():
        assert [t for _, t in b.problems] == texts and b.column == "question", kind
        assert b.kind == ("hf_dir" if kind == "saved" else "file") and b.revision is None
    # the digest is the problems' texts, whatever the file's form; rows as the form numbers them (JSONL lines from 1,
    # a CSV's after its header, lists and datasets from 0)
    assert len({b.digest for b in got.values()}) == 1
    assert [r for r, _ in got["jsonl"].problems] == [1, 2] and [r for r, _ in got["json"].problems] == [0, 1]
    assert [r for r, _ in got["csv"].problems] == [2, 3] and [r for r, _ in got["saved"].problems] == [0, 1]


def test_a_named_column_a_chat_prompt_and_rows_without_a_problem(tmp_path: Path) -> None:
    src = tmp_path / "b.jsonl"
    rows = [
        {"meta": {"text": "Find x if 2x = 10."}, "prompt": [{"role": "user", "content": "Find x if 2x = 10."}]},
        {"meta": {"text": ""}, "prompt": [{"role": "system", "content": "be brief"}]},
        {"meta": {"text": 7}},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    dotted = load_benchmark("b", str(src), column="meta.text")
    assert dotted.problems == [(1, "Find x if 2x = 10.")] and dotted.n_skipped == 3
    assert dotted.skipped[0] == f"{src}:2: 'meta.text' is empty" and "not text" in dotted.skipped[1]
    assert "broken JSON" in dotted.skipped[2]
    chat = load_benchmark("b", str(src))  # `prompt` found: a chat's user turns are its problem
    assert chat.column == "prompt" and chat.problems == [(1, "Find x if 2x = 10.")]


def test_bad_benchmarks_are_refused_in_one_line(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "b.jsonl"
    src.write_text(json.dumps({"q": "What is 1 + 1?", "answer": "2"}) + "\n")
    wanted = r"no problem column \(looked for problem, question, .*its records have answer, q; name one: --map problem="
    with pytest.raises(ValueError, match=wanted):
        load_benchmark("b", str(src))
    with pytest.raises(ValueError, match="no column 'nope'; its records have answer, q"):
        load_benchmark("b", str(src), column="nope")
    src.write_text(json.dumps({"problem": "  "}) + "\n")
    with pytest.raises(ValueError, match=r"holds no problem \(1 rows without one, .*an empty benchmark is refused"):
        load_benchmark("b", str(src))
    src.write_text("")
    with pytest.raises(ValueError, match="no record could be read"):
        load_benchmark("b", str(src))
    with pytest.raises(ValueError, match="a revision applies to hub datasets only"):
        load_benchmark("b", str(src), revision="main")
    with pytest.raises(ValueError, match="is no preset .*give its SOURCE"):
        load_benchmark("my-own")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachable) as err:
        load_benchmark("aime24")
    line = str(err.value)
    assert "\n" not in line and "'HuggingFaceH4/aime_2024' cannot be read here (HF_HUB_OFFLINE is set)" in line
    assert "where there is network" in line and "rsr add-benchmark NAME FILE --map problem=COLUMN" in line


def test_presets_name_a_hub_id_split_and_column() -> None:
    for name in ("aime24", "aime25", "amc23", "math500", "gpqa-diamond", "livecodebench", "gsm8k", "olympiadbench"):
        source, column, split, config = with_preset(name, None, None, None, None)
        assert "/" in source and column and split and PRESETS[name].note
    assert with_preset("gsm8k", None, None, None, None) == ("openai/gsm8k", "question", "test", "main")
    assert with_preset("gsm8k", "mine.jsonl", None, None, None) == ("mine.jsonl", None, None, None)


def test_a_config_names_presets_and_files_from_its_own_folder(tmp_path: Path) -> None:
    from rsr.config import PipelineConfig

    (tmp_path / "t.jsonl").write_text("{}\n")
    (tmp_path / "mine.jsonl").write_text(json.dumps({"q": "x"}) + "\n")
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "teachers: [{name: t, path: t.jsonl}]\n"
        "benchmarks: [aime24, {name: mine, source: mine.jsonl, problem: q, ngram: 13}, {name: hub, source: org/set}]\n"
    )
    got = PipelineConfig.load(config).benchmarks
    assert [(b.name, b.source, b.problem, b.ngram) for b in got] == [
        ("aime24", None, None, 8), ("mine", str(tmp_path / "mine.jsonl"), "q", 13), ("hub", "org/set", None, 8)
    ]  # fmt: skip
    config.write_text("teachers: [{name: t, path: t.jsonl}]\nbenchmarks: [{name: 'a b'}]\n")
    with pytest.raises(ValueError, match="should match pattern"):
        PipelineConfig.load(config)


def test_the_demo_benchmark_holds_exactly_the_demo_problems_it_leaked(tmp_path: Path) -> None:
    from rsr.curate.decontaminate import BenchmarkProblem, Matcher
    from rsr.demo import LEAKED, write_demo_data

    config = write_demo_data(tmp_path)
    bench = load_benchmark("demo-bench", str(tmp_path / "benchmark.jsonl"))
    assert "benchmark.jsonl" in config.read_text() and len(bench.problems) == 6
    matcher = Matcher([BenchmarkProblem("demo-bench", row, text) for row, text in bench.problems])
    problems = [json.loads(line)["problem"] for line in (tmp_path / "problems.jsonl").read_text().splitlines()]
    flagged = [p for p, hits in zip(problems, matcher.match([[p] for p in problems]), strict=True) if hits]
    assert flagged == [p for p, _, _ in LEAKED]  # numbers changed, reworded, inside a request; no other
