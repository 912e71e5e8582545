"""Hostile input against every ingest adapter: each bad record is quarantined with its file, line and a reason
that names the problem; each good one is ingested; nothing crashes.

These extend tests/unit/test_ingest_adapters.py's fuzzers (which check "no crash, good ones kept" on random junk)
with targeted mutations: a good record is broken in one known way, and the test asserts that exactly that line is
quarantined with a reason naming what is wrong, while its good neighbours are ingested. Plus the big cases (a 50 MB
line, a 10,000-message record, empty/binary/corrupt files in every format), a store round trip of arbitrary text, and
the same file through the DAG (curate_teacher -> DuckDB trajectories + quarantine).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsr.curate.ingest import _io, ingest_file, iter_ingest
from rsr.curate.ingest._common import ROLE_ALIASES, ROLES

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- the mutations: (how to break a good record, what the reason must say) -----------------------------------------

_not_str = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip
_not_str_or_none = st.one_of(st.none(), _not_str)
_not_answer = st.one_of(
    st.booleans(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
    st.sampled_from([math.inf, -math.inf]),
)  # fmt: skip
_unknown_role = st.text(max_size=12).filter(lambda r: r not in ROLES and r not in ROLE_ALIASES)
# OpenAI-style content parts: text parts are read, any other part is rejected by its type
_image_part = st.just([{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {"url": "x.png"}}])


def _chat(i: int) -> dict:
    return {
        "id": f"good-{i}",
        "teacher": "t",
        "answer": "2",
        "messages": [
            {"role": "user", "content": f"problem number {i}"},
            {"role": "assistant", "content": f"answer number {i}"},
        ],
    }


def _set_message(rec: dict, index: int, **fields) -> dict:
    rec["messages"][index] = {**rec["messages"][index], **fields}
    return rec


# name -> strategy of (mutate(record) -> record, expected reason regex)
MESSAGE_MUTATIONS = {
    "no messages": st.just((lambda r: {k: v for k, v in r.items() if k != "messages"}, r"missing `messages`")),
    "messages not a list": _not_str_or_none.filter(lambda v: not isinstance(v, list)).map(
        lambda v: (lambda r: {**r, "messages": v}, r"`messages` must be a list")
    ),
    "messages empty": st.just((lambda r: {**r, "messages": []}, r"`messages` is empty")),
    "message not an object": st.tuples(st.integers(0, 1), st.one_of(st.integers(), st.text(max_size=5))).map(
        lambda a: (
            lambda r: {**r, "messages": [*r["messages"][: a[0]], a[1], *r["messages"][a[0] + 1 :]]},
            rf"message {a[0]} must be an object",
        )
    ),  # fmt: skip
    "role not a string": st.tuples(st.integers(0, 1), _not_str_or_none).map(
        lambda a: (lambda r: _set_message(r, a[0], role=a[1]), rf"message {a[0]} has no string `role`")
    ),
    "unknown role": st.tuples(st.integers(0, 1), _unknown_role).map(
        lambda a: (lambda r: _set_message(r, a[0], role=a[1]), rf"message {a[0]} has unknown role")
    ),
    "content not a string": st.tuples(st.integers(0, 1), _not_str_or_none).map(
        lambda a: (lambda r: _set_message(r, a[0], content=a[1]), rf"message {a[0]} \(\w+\) content must be a string")
    ),
    "content part not text": st.tuples(st.integers(0, 1), _image_part).map(
        lambda a: (
            lambda r: _set_message(r, a[0], content=a[1]),
            rf"message {a[0]} \(\w+\) content part 1 has type 'image_url'",
        )
    ),
    "content with a lone surrogate": st.tuples(st.integers(0, 1), st.sampled_from(["\ud800", "x\udfff"])).map(
        lambda a: (lambda r: _set_message(r, a[0], content=a[1]), r"not valid UTF-8 text")
    ),
    "teacher not a string": _not_str.map(lambda v: (lambda r: {**r, "teacher": v}, r"`teacher` must be a string")),
    "answer of the wrong type": _not_answer.map(
        lambda v: (lambda r: {**r, "answer": v}, r"`answer` (must be a string or a number|is not a finite)")
    ),
    "id of the wrong type": st.one_of(
        st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=1)
    ).map(lambda v: (lambda r: {**r, "id": v}, r"`id` must be a string")),  # fmt: skip
    "problem_id of the wrong type": _not_str.map(
        lambda v: (lambda r: {**r, "problem_id": v}, r"`problem_id` must be a string")
    ),
    "declared_answer of the wrong type": _not_answer.map(
        lambda v: (lambda r: {**r, "declared_answer": v}, r"`declared_answer`")
    ),
    "no user turn": st.just((lambda r: {**r, "messages": r["messages"][1:]}, r"no user turn")),
    "no assistant turn": st.just((lambda r: {**r, "messages": r["messages"][:1]}, r"no assistant turn")),
    "empty response": st.sampled_from(["", "  ", "\n\t"]).map(
        lambda v: (lambda r: _set_message(r, 1, content=v), r"last assistant turn \(message 1\) is empty")
    ),
    "not an object": st.one_of(st.lists(st.integers(), max_size=2), st.integers(), st.text(max_size=5)).map(
        lambda v: (lambda r: v, r"record must be a JSON object")
    ),
}
# byte-level damage to a good line
LINE_MUTATIONS = {
    "truncated JSON": st.floats(0.0, 0.99).map(lambda f: (lambda b: b[: int(len(b) * f)] or b"{", r"broken JSON")),
    "invalid UTF-8": st.tuples(st.floats(0.0, 1.0), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"])).map(
        lambda a: (lambda b: b[: int(len(b) * a[0])] + a[1] + b[int(len(b) * a[0]) :], r"invalid UTF-8 at byte \d+")
    ),  # fmt: skip
}

_line = st.one_of(
    st.just(None),  # a good record
    st.sampled_from(sorted(MESSAGE_MUTATIONS)).flatmap(lambda k: MESSAGE_MUTATIONS[k].map(lambda m: ("rec", k, m))),
    st.sampled_from(sorted(LINE_MUTATIONS)).flatmap(lambda k: LINE_MUTATIONS[k].map(lambda m: ("line", k, m))),
)


def _assert_each_line(result, path: Path, expected: dict[int, tuple[str, str] | None], line_base: int = 1) -> None:
    """expected: line -> None (good, must be ingested) or (mutation name, reason regex) (must be quarantined)."""
    ingested = {t.source_line: t for t in result.trajectories}
    rejected = {r.source_line: r for r in result.rejected}
    assert len(rejected) == len(result.rejected), "one quarantine entry per bad line"
    for line, want in expected.items():
        if want is None:
            assert line in ingested, f"good line {line} was not ingested: {rejected.get(line)}"
            continue
        name, pattern = want
        assert line in rejected, f"line {line} ({name}) was not quarantined"
        r = rejected[line]
        assert r.source_file == str(path)
        assert re.search(pattern, r.reason), f"line {line} ({name}): reason {r.reason!r} does not match {pattern!r}"
        assert 0 < len(r.raw.encode()) <= _io.RAW_LIMIT
    assert set(ingested) | set(rejected) == set(expected)


@FUZZ
@given(st.lists(_line, min_size=1, max_size=10))
def test_fuzz_messages_mutations_each_bad_line_quarantined_with_its_reason(lines):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "teacher.jsonl"
        raw, expected = [], {}
        for i, item in enumerate(lines):
            good = json.dumps(_chat(i)).encode()
            if item is None:
                raw.append(good)
                expected[i + 1] = None
            elif item[0] == "rec":
                mutate, pattern = item[2]
                raw.append(json.dumps(mutate(_chat(i))).encode())
                expected[i + 1] = (item[1], pattern)
            else:
                mutate, pattern = item[2]
                raw.append(mutate(good).replace(b"\n", b" "))
                expected[i + 1] = (item[1], pattern)
        path.write_bytes(b"\n".join(raw) + b"\n")
        result = ingest_file(path, fmt="messages")  # no teacher fallback: a record's own teacher must be valid
        _assert_each_line(result, path, expected)


# ---- table adapter: JSONL rows and CSV rows with a mapping ----------------------------------------------------------

MAPPING = {"problem": "question", "response": "output", "teacher": "model", "answer": "gold", "id": "qid"}


def _row(i: int) -> dict:
    return {"qid": f"good-{i}", "question": f"question {i}", "output": f"output {i}", "model": "m", "gold": "3"}


TABLE_MUTATIONS = {
    "no problem column": st.just(
        (lambda r: {k: v for k, v in r.items() if k != "question"}, r"missing column `question` \(mapped to problem\)")
    ),  # fmt: skip
    "problem not a string": _not_str.map(
        lambda v: (lambda r: {**r, "question": v}, r"column `question` \(mapped to problem\) must be a string")
    ),
    "response null": st.just((lambda r: {**r, "output": None}, r"missing column `output` \(mapped to response\)")),
    "response blank": st.sampled_from(["", "   "]).map(
        lambda v: (lambda r: {**r, "output": v}, r"column `output` \(mapped to response\) is empty")
    ),
    "teacher not a string": _not_str.map(
        lambda v: (lambda r: {**r, "model": v}, r"column `model` \(mapped to teacher\) must be a string")
    ),
    "answer of the wrong type": _not_answer.map(
        lambda v: (lambda r: {**r, "gold": v}, r"column `gold` \(mapped to answer\)")
    ),
    "lone surrogate": st.just((lambda r: {**r, "output": "a\ud800b"}, r"not valid UTF-8 text")),
}


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.just(None),
            st.sampled_from(sorted(TABLE_MUTATIONS)).flatmap(lambda k: TABLE_MUTATIONS[k].map(lambda m: (k, m))),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_fuzz_table_jsonl_mutations(items):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        lines, expected = [], {}
        for i, item in enumerate(items):
            if item is None:
                lines.append(json.dumps(_row(i)))
                expected[i + 1] = None
            else:
                name, (mutate, pattern) = item
                lines.append(json.dumps(mutate(_row(i))))
                expected[i + 1] = (name, pattern)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = ingest_file(path, fmt="table", mapping=MAPPING)
        _assert_each_line(result, path, expected)


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.just(None),
            st.sampled_from(["bad bytes", "blank response", "short row", "long row"]),
        ),
        min_size=1,
        max_size=10,
    ),
    st.sampled_from([",", "\t"]),
)
def test_fuzz_csv_and_tsv_rows(items, delimiter):
    """CSV/TSV: invalid UTF-8 inside a cell, blank cells, rows with too few or too many fields."""
    reasons = {
        "bad bytes": r"column `output` \(mapped to response\) is not valid UTF-8 text",
        "blank response": r"column `output` \(mapped to response\) is empty",
        "short row": r"CSV row has 4 fields, the header has 5",
        "long row": r"CSV row has 6 fields, the header has 5",
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("rows.csv" if delimiter == "," else "rows.tsv")
        header = ["qid", "question", "output", "model", "gold"]
        buf = io.StringIO()
        csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerow(header)
        data, expected = buf.getvalue().encode(), {}
        for i, item in enumerate(items):
            row = [f"good-{i}", f"question {i}", f"output {i}", "m", "3"]
            if item == "blank response":
                row[2] = "  "
            elif item == "short row":
                row = row[:4]
            elif item == "long row":
                row = [*row, "extra"]
            buf = io.StringIO()
            csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerow(row)
            line = buf.getvalue().encode()
            if item == "bad bytes":
                line = line.replace(b"output", b"out\xffput", 1)
            data += line
            expected[i + 2] = None if item is None else (item, reasons[item])  # line 1 is the header
        path.write_bytes(data)
        result = ingest_file(path, fmt="table", mapping=MAPPING)
        ingested = {t.source_line for t in result.trajectories}
        rejected = {r.source_line: r.reason for r in result.rejected}
        for line, want in expected.items():
            if want is None:
                assert line in ingested
            else:
                assert re.search(want[1], rejected[line]), (line, rejected.get(line))


# ---- zeroeval: a JSON list; bad bytes inside one record's strings must not sink the file ---------------------------

ZEROEVAL_MUTATIONS = {
    "no problem": (lambda r: {k: v for k, v in r.items() if k != "problem"}, r"missing `problem`"),
    "problem not a string": (lambda r: {**r, "problem": 7}, r"`problem` must be a string, got int"),
    "no output": (lambda r: {k: v for k, v in r.items() if k != "output"}, r"missing `output`"),
    "output empty list": (lambda r: {**r, "output": []}, r"`output` is an empty list"),
    "output of numbers": (lambda r: {**r, "output": [5]}, r"`output` must be a list holding the teacher's text"),
    "output blank": (lambda r: {**r, "output": ["  "]}, r"`output` is empty"),
    "answer a list": (lambda r: {**r, "answer": [1]}, r"`answer` must be a string or a number"),
    "id a float": (lambda r: {**r, "id": 1.5}, r"`id` must be a string"),
    "not an object": (lambda r: [r], r"record must be a JSON object"),
}


@FUZZ
@given(st.lists(st.one_of(st.just(None), st.just("bad bytes"), st.sampled_from(sorted(ZEROEVAL_MUTATIONS))),
                min_size=1, max_size=10))  # fmt: skip
def test_fuzz_zeroeval_mutations_and_bad_bytes(items):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model-x.json"
        parts, expected = [], {}
        for i, item in enumerate(items):
            rec = {"id": f"good-{i}", "problem": f"problem {i}", "answer": "5", "output": [f"The answer is {i}."]}
            if item is None:
                parts.append(json.dumps(rec).encode())
                expected[i] = None
            elif item == "bad bytes":  # raw invalid UTF-8 inside the output string: only this record is lost
                parts.append(json.dumps(rec).encode().replace(b"The answer", b"The \xff\xfe answer"))
                expected[i] = (item, r"`output` is not valid UTF-8 text")
            else:
                mutate, pattern = ZEROEVAL_MUTATIONS[item]
                parts.append(json.dumps(mutate(rec)).encode())
                expected[i] = (item, pattern)
        path.write_bytes(b"[" + b",\n".join(parts) + b"]")
        result = ingest_file(path, fmt="zeroeval")
        ingested = {t.source_line for t in result.trajectories}
        rejected = {r.source_line: r for r in result.rejected}
        for index, want in expected.items():  # JSON lists report the 0-based record index
            if want is None:
                assert index in ingested
            else:
                assert re.search(want[1], rejected[index].reason), (want, rejected[index].reason)
                assert rejected[index].source_file == str(path) and rejected[index].raw
        assert all(t.teacher == "model-x" for t in result.trajectories)


# ---- Parquet and HF datasets (messages form) ------------------------------------------------------------------------


@FUZZ
@given(
    st.lists(
        st.lists(st.tuples(st.one_of(st.sampled_from(ROLES), st.text(max_size=8)), st.none() | st.text(max_size=8)),
                 max_size=4),
        min_size=1, max_size=8,
    )
)  # fmt: skip
def test_fuzz_parquet_and_hf_messages(chats):
    """Columnar inputs: arbitrary roles and null contents; every row is ingested or quarantined with a reason."""
    import datasets

    rows = [
        {"id": f"r{i}", "teacher": "t", "messages": [{"role": r, "content": c} for r, c in turns]}
        for i, turns in enumerate(chats)
    ]
    rows.append({"id": "good", "teacher": "t", "messages": _chat(0)["messages"]})
    with tempfile.TemporaryDirectory() as tmp:
        schema = pa.schema(
            [("id", pa.string()), ("teacher", pa.string()),
             ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))]
        )  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), Path(tmp) / "chats.parquet")
        datasets.Dataset(pa.Table.from_pylist(rows, schema=schema)).save_to_disk(tmp + "/ds")
        for source in (Path(tmp) / "chats.parquet", Path(tmp) / "ds"):
            result = ingest_file(source, fmt="messages" if source.suffix else "hf")
            assert len(result.trajectories) + len(result.rejected) + result.duplicates_skipped == len(rows)
            assert "good" in {t.source_id for t in result.trajectories}
            for r in result.rejected:
                assert r.reason and r.source_file.startswith(str(source)) and 0 <= r.source_line < len(rows)


# ---- arbitrary text survives ingest and the DuckDB round trip -------------------------------------------------------

_any_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40).filter(lambda s: s.strip())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_any_text, _any_text, _any_text), min_size=1, max_size=5))
def test_fuzz_any_text_round_trips_through_the_store(texts):
    """NUL, control characters, RTL marks, emoji, combining marks: stored and read back unchanged."""
    from rsr.store.writer import Store

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.jsonl"
        records = [
            {"teacher": teacher, "messages": [{"role": "user", "content": f"{i} {problem}"},
                                              {"role": "assistant", "content": response}]}
            for i, (teacher, problem, response) in enumerate(texts)
        ]  # fmt: skip
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n{broken\n", encoding="utf-8")
        result = ingest_file(path, fmt="messages")
        assert len(result.rejected) == 1
        with Store.open(Path(tmp) / "rsr.duckdb") as store:
            store.upsert_problems(result.problems)
            store.add_trajectories(result.trajectories, None)
            store.add_rejected(result.rejected, None)
            back = store.get_trajectories([t.trajectory_id for t in result.trajectories])
            quarantined = store.query("SELECT source_file, source_line, reason FROM quarantine")[1]
        assert back == result.trajectories
        assert quarantined == [(str(path), len(records) + 1, result.rejected[0].reason)]


# ---- the big and the broken ---------------------------------------------------------------------------------------


def test_a_50_mb_line_good_or_broken(tmp_path):
    path = tmp_path / "big.jsonl"
    big = "x" * (50 * 1024 * 1024)
    good = {"teacher": "t", "messages": [{"role": "user", "content": "big one"}, {"role": "assistant", "content": big}]}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(good) + "\n")
        fh.write('{"teacher": "t", "messages": [{"role": "user", "content": "' + big + "\n")  # 50 MB, unterminated
        fh.write(json.dumps(_chat(3)) + "\n")
    result = ingest_file(path, fmt="messages")
    assert [t.source_line for t in result.trajectories] == [3]  # past the 16 MB record limit: quarantined unread
    assert [r.source_line for r in result.rejected] == [1, 2]
    for bad in result.rejected:
        assert "bytes: over the 16 MB limit of one record" in bad.reason and len(bad.raw.encode()) <= _io.RAW_LIMIT
    assert str(len(json.dumps(good)) + 1) in result.rejected[0].reason  # its size, newline included


def test_an_8_mb_trace_goes_in(tmp_path):
    path = tmp_path / "eight.jsonl"
    turns = [{"role": "user", "content": "big"}, {"role": "assistant", "content": "y" * 8_000_000}]
    lines = [_chat(1), {"teacher": "t", "messages": turns}, _chat(3)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    chunks = list(iter_ingest(path, fmt="messages"))
    assert [t.source_line for c in chunks for t in c.trajectories] == [1, 2, 3]
    assert len(chunks[0].trajectories[1].response) == 8_000_000


def test_a_record_with_10000_messages(tmp_path):
    turns = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i}"} for i in range(10_000)]
    bad_turns = [*turns[:-1], {"role": "robot", "content": "x"}]
    path = tmp_path / "long.jsonl"
    path.write_text(
        json.dumps({"teacher": "t", "messages": turns}) + "\n" + json.dumps({"teacher": "t", "messages": bad_turns}),
        encoding="utf-8",
    )
    result = ingest_file(path, fmt="messages")
    (traj,) = result.trajectories
    # the problem is the opening user turn; the response the final assistant turn
    assert len(traj.messages) == 10_000 and traj.problem == "turn 0" and traj.response == "turn 9999"
    (bad,) = result.rejected
    assert bad.source_line == 2 and "message 9999 has unknown role 'robot'" in bad.reason


@pytest.mark.parametrize("fmt", ["messages", "zeroeval", "table"])
@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b" \n\t\n", "empty file"), (bytes(range(256)) * 20, "binary file"),
     (b"PAR1" + b"\x00garbage" * 30, "unreadable Parquet")],
)  # fmt: skip
def test_empty_binary_and_corrupt_files_with_every_adapter(tmp_path, fmt, content, reason):
    """The existing test covers format detection; here each adapter is named explicitly."""
    path = tmp_path / "input.parquet" if content.startswith(b"PAR1") else tmp_path / "input.jsonl"
    path.write_bytes(content)
    result = ingest_file(path, fmt=fmt, mapping={"problem": "q", "response": "r"} if fmt == "table" else None)
    assert result.trajectories == [] and len(result.rejected) == 1
    assert result.rejected[0].source_line == 0 and reason in result.rejected[0].reason


def test_corrupt_saved_hf_dataset_is_one_quarantined_entry(tmp_path):
    import datasets

    good = tmp_path / "good"
    datasets.Dataset.from_list([_chat(0)]).save_to_disk(str(good))
    bad_meta = tmp_path / "bad-meta"
    bad_meta.mkdir()
    (bad_meta / "dataset_info.json").write_text("{not json")
    (bad_meta / "state.json").write_text("{}")
    bad_arrow = tmp_path / "bad-arrow"
    datasets.Dataset.from_list([_chat(1)]).save_to_disk(str(bad_arrow))
    for f in bad_arrow.glob("*.arrow"):
        f.write_bytes(b"not arrow" * 10)
    assert len(ingest_file(good).trajectories) == 1
    for folder in (bad_meta, bad_arrow):
        result = ingest_file(folder)
        assert result.trajectories == [] and len(result.rejected) == 1
        r = result.rejected[0]
        assert r.source_file == str(folder) and r.source_line == 0 and "unreadable saved HF dataset" in r.reason
    with pytest.raises(FileNotFoundError, match="input.txt"):  # a file named as hf: a usage error, named
        (tmp_path / "input.txt").write_text('{"a": 1}\n')
        ingest_file(tmp_path / "input.txt", fmt="hf")


# ---- through the DAG ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_curate_teacher_stores_good_lines_and_quarantines_bad_ones(state_dir, tmp_path):
    from rsr.store.queries import Reader
    from rsr_flows.curate import curate_teacher

    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(_chat(0)).encode(),
        b"{broken json",
        json.dumps({**_chat(2), "messages": [{"role": "robot", "content": "x"}]}).encode(),
        json.dumps(_chat(3)).replace("answer number 3", "answer \\ud800").encode(),
        b'{"teacher": "t", "messages": "\xff\xfe"}',
        json.dumps({**_chat(5), "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).encode(),
        json.dumps(_chat(6)).encode(),
        b"",
        json.dumps(_chat(8)).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = curate_teacher("t", str(path), format="messages", score=False, state=str(state_dir))
    assert (result.ingested.new, result.ingested.quarantined) == (3, 5)
    with Reader.open(state_dir / "rsr.duckdb") as store:
        _, rows = store.query("SELECT source_line FROM trajectories ORDER BY 1")
        assert [r[0] for r in rows] == [1, 7, 9]
        _, rows = store.query("SELECT source_file, source_line, reason FROM quarantine ORDER BY source_line")
    assert [(f, line) for f, line, _ in rows] == [(str(path), n) for n in (2, 3, 4, 5, 6)]
    reasons = [reason for _, _, reason in rows]
    wanted = ["broken JSON", "unknown role 'robot'", "not valid UTF-8 text", "invalid UTF-8 at byte",
              "content part 0 has type 'image_url'"]  # fmt: skip
    for reason, want in zip(reasons, wanted, strict=True):
        assert want in reason
    again = curate_teacher("t", str(path), format="messages", score=False, state=str(state_dir))
    assert (again.ingested.new, again.ingested.quarantined_new) == (0, 0)  # quarantine is idempotent too
