"""Ingest: each adapter on small files written here, the real ZeroEval files, idempotency, and fuzzing."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsr.curate.ingest import _io, detect_format, ingest_file, load_problems, parse_teacher_json
from rsr.records import problem_id_for

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chat(problem: str = "What is 1+1?", reply: str = "It is 2.", **extra) -> dict:
    return {"messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": reply}], **extra}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ---- messages ---------------------------------------------------------------------------------------------------


def test_messages_jsonl_good_records(tmp_path):
    path = write_jsonl(
        tmp_path / "chats.jsonl",
        [
            chat(id="a", teacher="t1", answer="2"),
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "warm-up"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "What is 2+2?"},
                    {"role": "assistant", "content": "4", "name": "ignored extra key"},
                ],
                "id": 7,
                "problem_id": "p-custom",
            },
        ],
    )
    assert detect_format(path) == "messages"
    result = ingest_file(path, teacher="fallback")
    assert result.rejected == []
    first, second = result.trajectories
    assert (first.teacher, first.source_id, first.gold_answer, first.source_line) == ("t1", "a", "2", 1)
    assert first.problem_id == problem_id_for("What is 1+1?") and first.response == "It is 2."
    assert (second.teacher, second.source_id, second.problem_id) == ("fallback", "7", "p-custom")
    # a multi-turn chat's problem is its opening user turn; the response its final assistant turn
    assert second.problem == "warm-up" and second.response == "4" and len(second.messages) == 5
    assert [p.problem_id for p in result.problems] == [first.problem_id, "p-custom"]
    assert result.problems[0].gold_answer == "2" and result.problems[1].gold_answer is None


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (chat(), "no teacher"),
        ({"teacher": "t"}, "missing `messages`"),
        ({"messages": "hi", "teacher": "t"}, "`messages` must be a list"),
        ({"messages": [{"role": "user", "content": 5}], "teacher": "t"}, "content must be a string"),
        ({"messages": [{"role": "robot", "content": "x"}], "teacher": "t"}, "unknown role 'robot'"),
        ({"messages": [{"role": "tool", "content": "x"}], "teacher": "t"}, "no user turn"),
        ({"messages": [{"role": "user", "content": "q"}], "teacher": "t"}, "no assistant turn"),
        ({"messages": [{"role": "assistant", "content": "a"}], "teacher": "t"}, "no user turn"),
        (chat(reply="   ", teacher="t"), "last assistant turn (message 1) is empty"),
        (chat(teacher=3), "`teacher` must be a string"),
        (chat(teacher="t", answer={"x": 1}), "`answer` must be a string or a number"),
        ([1, 2], "record must be a JSON object"),
    ],
)
def test_messages_bad_records_are_quarantined_with_a_reason(tmp_path, record, reason):
    path = write_jsonl(tmp_path / "x.jsonl", [chat(teacher="good", id="ok"), record])
    result = ingest_file(path, fmt="messages")
    assert [t.source_id for t in result.trajectories] == ["ok"]
    (bad,) = result.rejected
    assert reason in bad.reason and bad.source_line == 2 and bad.source_file == str(path) and bad.raw


def test_messages_broken_lines_do_not_sink_the_file(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = json.dumps(chat(teacher="t")).encode()
    path.write_bytes(
        good + b"\n{not json\n\n" + b'{"messages": "\xff\xfe"}\n' + json.dumps(chat("other", teacher="t")).encode()
    )
    result = ingest_file(path)
    assert len(result.trajectories) == 2
    assert [(r.source_line, r.reason.split(":")[0]) for r in result.rejected] == [
        (2, "broken JSON"),
        (4, "invalid UTF-8 at byte 14 of the line"),
    ]


def test_messages_huge_and_too_long_lines(tmp_path, monkeypatch):
    big = "x " * 3_000_000  # 6 MB response: fine
    path = write_jsonl(tmp_path / "big.jsonl", [chat(reply=big, teacher="t"), chat("q2", teacher="t")])
    assert len(ingest_file(path).trajectories) == 2
    monkeypatch.setattr(_io, "MAX_RECORD_BYTES", 1000)  # beyond the limit: rejected unread, the next line still read
    result = ingest_file(path, fmt="messages")
    assert [t.problem for t in result.trajectories] == ["q2"]
    assert result.rejected[0].source_line == 1 and "over the" in result.rejected[0].reason
    assert len(result.rejected[0].raw.encode()) <= _io.RAW_LIMIT


def test_deeply_nested_json_line_is_rejected_not_raised(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n" + json.dumps(chat(teacher="t")) + "\n")
    result = ingest_file(path, fmt="messages")
    assert len(result.trajectories) == 1 and "broken JSON" in result.rejected[0].reason


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"  \n\n ", "empty file"), (b"\x00\x01\x02binary\x00" * 50, "binary file")],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet", ""])
def test_empty_and_binary_files_give_one_rejected_line_zero(tmp_path, content, reason, suffix):
    path = tmp_path / f"input{suffix}"
    path.write_bytes(content)
    result = ingest_file(path)
    assert result.trajectories == [] and len(result.rejected) == 1
    assert result.rejected[0].source_line == 0 and reason in result.rejected[0].reason


def test_missing_path_raises_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        ingest_file(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown format"):
        ingest_file(write_jsonl(tmp_path / "a.jsonl", [chat(teacher="t")]), fmt="yaml")


def test_ingest_is_idempotent_and_skips_repeats_within_a_file(tmp_path):
    path = write_jsonl(
        tmp_path / "rep.jsonl", [chat(teacher="t"), chat(teacher="t", id="again"), chat("q", teacher="t")]
    )
    first, second = ingest_file(path), ingest_file(path)
    assert [t.trajectory_id for t in first.trajectories] == [t.trajectory_id for t in second.trajectories]
    assert len(first.trajectories) == 2 and first.duplicates_skipped == 1 and first.rejected == []


def test_messages_parquet(tmp_path):
    rows = [chat(teacher="t", id=str(i), problem=f"problem {i}") for i in range(3)]
    path = tmp_path / "chats.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert detect_format(path) == "messages"
    result = ingest_file(path)
    assert [t.source_line for t in result.trajectories] == [0, 1, 2] and result.rejected == []


# ---- zeroeval ---------------------------------------------------------------------------------------------------


def zeroeval_record(i: int, output: str, answer: str = "5") -> dict:
    return {"id": i, "problem": f"Problem {i}?", "answer": answer, "generator": "org/model-x", "output": [output]}


GOOD_JSON = '```json\n{\n  "reasoning": "We add.\\nSo $\\\\frac{1}{2}$ doubles.",\n  "answer": "5"\n}\n```'
RAW_LATEX_JSON = (
    '```json\n{"reasoning": "Use \\frac{a}{b} and \\(x\\) with \\neq, then\\nnext line.", '
    '"answer": "\\frac{1}{2}"}\n```'
)
BROKEN_JSON = '```json\n{"reasoning": "Long work... so it is 7.\n\n"answer": "7"\n}\n```'
NO_JSON = "I think the answer is \\boxed{9} but I ran out of"


def test_parse_teacher_json_leniently():
    good = parse_teacher_json(GOOD_JSON)
    assert (good.how, good.answer, good.reasoning) == ("json", "5", "We add.\nSo $\\frac{1}{2}$ doubles.")
    latex = parse_teacher_json(RAW_LATEX_JSON)  # unescaped LaTeX: \f and \n of \frac / \neq stay LaTeX
    assert latex.how == "json" and latex.answer == "\\frac{1}{2}"
    assert latex.reasoning == "Use \\frac{a}{b} and \\(x\\) with \\neq, then\nnext line."
    broken = parse_teacher_json(BROKEN_JSON)  # no closing quote/comma after the reasoning
    assert (broken.how, broken.answer, broken.reasoning) == ("regex", "7", "Long work... so it is 7.")
    assert parse_teacher_json(NO_JSON) == parse_teacher_json(NO_JSON) and parse_teacher_json(NO_JSON).how == "raw"


def test_zeroeval_small_file(tmp_path):
    path = tmp_path / "model-x.json"
    records = [zeroeval_record(0, GOOD_JSON), zeroeval_record(1, NO_JSON), {"id": 2, "problem": "p"}]
    records.append(zeroeval_record(3, RAW_LATEX_JSON, answer="\\frac{1}{2}"))
    path.write_text(json.dumps(records))
    assert detect_format(path) == "zeroeval"
    result = ingest_file(path)
    good, raw, latex = result.trajectories
    assert good.teacher == "model-x" and good.source_id == "0" and good.source_line == 0 and good.gold_answer == "5"
    assert good.response.endswith("\n\nThe answer is $\\boxed{5}$.") and good.declared_answer == "5"
    assert [m.role for m in good.messages] == ["user", "assistant"] and good.messages[0].content == "Problem 0?"
    assert raw.response == NO_JSON and raw.declared_answer is None  # malformed: kept as the raw text
    assert latex.response.endswith("$\\boxed{\\frac{1}{2}}$.")
    assert [(r.source_line, r.reason) for r in result.rejected] == [(2, "missing `output`")]
    assert ingest_file(path, teacher="named").trajectories[0].teacher == "named"


def test_zeroeval_whole_file_broken(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"id": 0, "problem": "x", "output": ["y"]}, {oops')
    result = ingest_file(path, fmt="zeroeval")
    assert result.trajectories == [] and result.rejected[0].source_line == 0
    assert "whole JSON file is unreadable" in result.rejected[0].reason


def test_zeroeval_invalid_utf8_in_one_record(tmp_path):
    path = tmp_path / "m.json"
    body = json.dumps([zeroeval_record(0, GOOD_JSON), zeroeval_record(1, "BAD"), zeroeval_record(2, GOOD_JSON)])
    path.write_bytes(body.encode().replace(b"BAD", b"B\xffD"))
    result = ingest_file(path)
    assert [t.source_line for t in result.trajectories] == [0, 2]
    assert result.rejected[0].source_line == 1 and "not valid UTF-8" in result.rejected[0].reason


def test_zeroeval_real_files(shared_data):
    folder = shared_data / "zeroeval-math-l5"
    names = ["gpt-4o-2024-08-06", "Meta-Llama-3.1-8B-Instruct", "Phi-3.5-mini-instruct"]
    pids = []
    for name in names:
        result = ingest_file(folder / f"{name}.json")
        assert len(result.trajectories) == 721 and result.rejected == [] and result.duplicates_skipped == 0
        assert {t.teacher for t in result.trajectories} == {name}
        assert all(t.gold_answer for t in result.trajectories) and len(result.problems) == 721
        raw = [t for t in result.trajectories if not t.response.endswith("$.")]
        assert raw, "some outputs are malformed and must fall back to the raw text"
        assert all("\x0c" not in t.response and "\x08" not in t.response for t in result.trajectories)
        pids.append({t.problem_id for t in result.trajectories})
        again = ingest_file(folder / f"{name}.json")
        assert [t.trajectory_id for t in again.trajectories] == [t.trajectory_id for t in result.trajectories]
    assert pids[0] == pids[1] == pids[2]  # teachers meet on the same problems


# ---- table ------------------------------------------------------------------------------------------------------


def test_table_csv_with_mapping(tmp_path):
    path = tmp_path / "runs.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["qid", "question", "output", "model", "gold", "sys"])
        w.writerow(["q1", "What is 3+3?", "6, with a comma\nand a newline", "m1", "6", "You are terse."])
        w.writerow(["q2", "What is 4+4?", "8", "", "", ""])
        w.writerow(["q3", "", "9", "m1", "9", ""])
        w.writerow(["q4", "short row"])
    mapping = {"problem": "question", "response": "output", "teacher": "model", "answer": "gold", "id": "qid"}
    result = ingest_file(path, mapping={**mapping, "system": "sys"}, teacher="arg")
    a, b = result.trajectories
    assert [m.role for m in a.messages] == ["system", "user", "assistant"] and a.response.endswith("newline")
    assert (a.teacher, a.gold_answer, a.source_id, a.source_line) == ("m1", "6", "q1", 2)
    assert (b.teacher, b.gold_answer, len(b.messages), b.source_line) == ("arg", None, 2, 4)
    assert [(r.source_line, r.reason) for r in result.rejected] == [
        (5, "column `question` (mapped to problem) is empty"),
        (6, "CSV row has 2 fields, the header has 6"),
    ]


def test_table_jsonl_cli_mapping_and_missing_mapping(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"q": "1+1?", "r": "2", "who": "m"}])
    assert detect_format(path) == "table"
    result = ingest_file(path, mapping="problem=q response=r teacher=who")
    assert result.trajectories[0].teacher == "m" and result.trajectories[0].problem == "1+1?"
    unmapped = ingest_file(path, teacher="x")
    assert "pass a mapping" in unmapped.rejected[0].reason
    with pytest.raises(ValueError, match="unknown mapping field"):
        ingest_file(path, mapping={"question": "q"})


# ---- hf ---------------------------------------------------------------------------------------------------------


def test_hf_saved_datasets(tmp_path):
    import datasets

    msgs = datasets.Dataset.from_list([chat(teacher="t", problem=f"p{i}") for i in range(3)])
    msgs.save_to_disk(str(tmp_path / "msgs"))
    assert detect_format(tmp_path / "msgs") == "hf"
    result = ingest_file(tmp_path / "msgs")
    assert [t.problem for t in result.trajectories] == ["p0", "p1", "p2"] and result.rejected == []

    table = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"question": "a?", "output": "A", "model": "m"}]),
            "test": datasets.Dataset.from_list([{"question": "b?", "output": "", "model": "m"}]),
        }
    )
    table.save_to_disk(str(tmp_path / "tbl"))
    result = ingest_file(tmp_path / "tbl", mapping={"problem": "question", "response": "output", "teacher": "model"})
    assert [t.source_file for t in result.trajectories] == [f"{tmp_path / 'tbl'}[train]"]
    assert result.rejected[0].source_file == f"{tmp_path / 'tbl'}[test]" and "is empty" in result.rejected[0].reason


def test_hf_hub_id_offline_names_the_dataset(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="nobody/no-such-dataset"):
        ingest_file("nobody/no-such-dataset", fmt="hf")


def test_corrupt_parquet_is_one_rejected_entry(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + b"not really parquet" * 10)
    result = ingest_file(path, fmt="messages")
    assert result.trajectories == [] and len(result.rejected) == 1
    assert result.rejected[0].source_line == 0 and "unreadable Parquet" in result.rejected[0].reason


# ---- problems + gold join -----------------------------------------------------------------------------------------


def test_load_problems_renders_float_golds(shared_data):
    amc = load_problems(shared_data / "problems" / "amc23.jsonl")
    assert len(amc) == 40 and amc[0].gold_answer == "27" and all("." not in p.gold_answer for p in amc)
    aime = load_problems(shared_data / "problems" / "aime24.jsonl")  # `prompt` instead of `problem`
    assert len(aime) == 30 and all(p.text and p.gold_answer for p in aime)


def test_gold_join_by_id_and_by_normalised_text(tmp_path):
    problems = write_jsonl(
        tmp_path / "gold.jsonl",
        [{"problem": "What is  TWO plus two?", "answer": 4.0}, {"id": "q-7", "problem": "Other", "answer": "7"}],
    )
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [
            chat("what is two plus two?", teacher="t"),  # normalised text match
            chat("reworded but same id", teacher="t", problem_id="q-7"),  # the file's own id
            chat("unknown problem", teacher="t"),
            chat("what is two plus two?", teacher="u", answer="5"),  # own gold wins
        ],
    )
    result = ingest_file(path, problems=problems)
    assert [t.gold_answer for t in result.trajectories] == ["4", "7", None, "5"]
    by_pid = {p.problem_id: p for p in result.problems}
    assert by_pid[problem_id_for("What is two plus two?")].source == str(problems)
    assert len(result.problems) == 3


def test_gold_join_real_math500(shared_data, tmp_path):
    rows = [json.loads(line) for line in (shared_data / "problems" / "math500.jsonl").open()][:20]
    path = write_jsonl(tmp_path / "m.jsonl", [chat(r["problem"], "...", teacher="t") for r in rows])
    result = ingest_file(path, problems=shared_data / "problems" / "math500.jsonl")
    assert [t.gold_answer for t in result.trajectories] == [r["answer"] for r in rows]


# ---- fuzzing: bad records quarantined with a reason, good ones ingested, never a crash ----------------------------

_text = st.text(min_size=0, max_size=30)
_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _text)
_bad_message = st.one_of(
    _json_scalar,
    st.fixed_dictionaries({"role": st.sampled_from(["tool", "function", "", "USER"]), "content": _text}),
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": _json_scalar}),
    st.dictionaries(_text, _json_scalar, max_size=3),
)
_bad_record = st.one_of(
    _json_scalar,
    st.lists(_json_scalar, max_size=3),
    st.fixed_dictionaries({"messages": st.one_of(_json_scalar, st.lists(_bad_message, max_size=4))}),
    st.fixed_dictionaries({"messages": st.just([]), "teacher": _text}),
)
_garbage_line = st.one_of(
    st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b" ") + b"\xff"),  # invalid UTF-8
    st.text(min_size=1, max_size=40).map(lambda s: ("{" + s).replace("\n", " ").encode()),  # broken JSON
)


def _good_chat(i: int) -> dict:
    return chat(f"problem number {i}", f"answer number {i}", teacher="t", id=f"good-{i}")


def _check_outcome(result, expected_good: set[str], n_records: int) -> None:
    if not expected_good and len(result.rejected) == 1 and result.rejected[0].source_line == 0:
        return  # nothing but garbage: the whole file may be quarantined as one unreadable file
    assert len(result.trajectories) + len(result.rejected) + result.duplicates_skipped == n_records
    assert {t.source_id for t in result.trajectories if t.source_id in expected_good} == expected_good
    assert all(r.reason and r.source_line >= 0 and len(r.raw.encode()) <= _io.RAW_LIMIT for r in result.rejected)


@FUZZ
@given(st.lists(st.one_of(st.integers(0, 10**6), _bad_record, _garbage_line), min_size=1, max_size=12))
def test_fuzz_messages_adapter(items):
    with tempfile.TemporaryDirectory() as tmp:
        lines, good = [], set()
        for i, item in enumerate(items):
            if isinstance(item, int):
                lines.append(json.dumps(_good_chat(i)).encode())
                good.add(f"good-{i}")
            elif isinstance(item, bytes):
                lines.append(item)
            else:
                lines.append(json.dumps(item).encode())
        path = Path(tmp) / "fuzz.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        result = ingest_file(path, fmt="messages")
        _check_outcome(result, good, len(items))


_bad_zeroeval = st.one_of(
    _json_scalar,
    st.fixed_dictionaries({"problem": _json_scalar, "output": st.lists(_text, max_size=2)}),
    st.fixed_dictionaries({"problem": _text, "output": st.one_of(_json_scalar, st.lists(_json_scalar, max_size=2))}),
    st.fixed_dictionaries({"problem": st.just("p"), "output": st.lists(_text, min_size=1, max_size=1)}),
)


@FUZZ
@given(st.lists(st.one_of(st.integers(0, 10**6), _bad_zeroeval, st.text(max_size=60)), min_size=1, max_size=10))
def test_fuzz_zeroeval_adapter(items):
    """Records with any output text (random JSON-ish strings included) ingest or are rejected; nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        records, good = [], set()
        for i, item in enumerate(items):
            if isinstance(item, int):
                records.append({"id": f"good-{i}", "problem": f"problem {i}", "answer": "1", "output": [GOOD_JSON]})
                good.add(f"good-{i}")
            elif isinstance(item, str):  # arbitrary teacher text, including fragments of JSON and LaTeX
                records.append({"id": f"txt-{i}", "problem": f"text problem {i}", "output": ['{"answer": "' + item]})
            else:
                records.append(item)
        path = Path(tmp) / "t.json"
        path.write_text(json.dumps(records))
        result = ingest_file(path, fmt="zeroeval")
        _check_outcome(result, good, len(records))


@FUZZ
@given(st.lists(st.one_of(st.integers(0, 10**6), st.lists(_text, min_size=0, max_size=5)), min_size=1, max_size=10))
def test_fuzz_table_adapter_csv(rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        good = set()
        with path.open("w", newline="", encoding="utf-8", errors="surrogatepass") as f:
            w = csv.writer(f)
            w.writerow(["id", "question", "output", "model"])
            for i, row in enumerate(rows):
                if isinstance(row, int):
                    w.writerow([f"good-{i}", f"q {i}", f"a {i}", "m"])
                    good.add(f"good-{i}")
                else:
                    w.writerow(row)
        mapping = {"problem": "question", "response": "output", "teacher": "model", "id": "id"}
        result = ingest_file(path, mapping=mapping)
        assert {t.source_id for t in result.trajectories} >= good
        assert all(r.reason for r in result.rejected)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["messages", "zeroeval", "table", None]))
def test_fuzz_arbitrary_bytes_never_crash(data, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".jsonl", ".json", ".csv"):
            path = Path(tmp) / f"f{suffix}"
            path.write_bytes(data)
            result = ingest_file(path, fmt=fmt, mapping={"problem": "q", "response": "r"}, teacher="t")
            assert all(r.reason for r in result.rejected)


@settings(max_examples=10, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["user", "assistant", "tool", "system"]), st.one_of(st.none(), _text)),
        min_size=0,
        max_size=4,
    ),
    st.one_of(st.none(), _text),
)
def test_fuzz_hf_adapter(turns, teacher):
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        rows = [_good_chat(0), {"messages": [{"role": r, "content": c} for r, c in turns], "teacher": teacher}]
        rows[0]["teacher"] = "t"
        for row in rows:
            row.setdefault("id", "bad")
        datasets.Dataset.from_list(rows).save_to_disk(tmp + "/ds")
        result = ingest_file(tmp + "/ds")
        _check_outcome(result, {"good-0"}, 2)
