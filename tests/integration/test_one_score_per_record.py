"""One record, one score (issue 31): whichever command computes it, the same bits, on every real chat template in
../shared/data/chat-templates, for agent rows that carry tool schemas in the file's own key order (not sorted: the
templates that print schemas with `tools | tojson` show that order).

The paths, each through the code its command runs (the embedded student, float32, each template swapped in):
- stored: the ingest task into a real DuckDB file (the schemas as stored), the score flow's shard (`_shard`: read
  back from DuckDB) scored as `score_shard` does, written and read back as the stored score row;
- `rsr score FILE`: `read_score_input` + `score_stream`; `rsr score --tokens`: the per-token Parquet rows, summed;
- `rsr explain ID` (stored) and `rsr explain REC --file FILE`: `explain_page`, checked against the stored row.
Every template: the tokens each path hands the scorer are equal; one template: the numbers (forwards are the cost).
An agent trajectory ending on the simulated user's turn (tau-bench) is among the rows: its trailing turn dropped
and counted, the record stored and scored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pyarrow.parquet as pq
import pytest

from rsr.metric import TrajectoryStats
from rsr.records import RecordError
from rsr.report.explain import explain_page
from rsr.score.io import read_score_input, score_stream
from rsr.score.student import Student
from rsr.settings import StateDir
from rsr.store.queries import Reader
from rsr.store.writer import Store
from rsr_flows.score import _shard
from rsr_tasks.curate import ingest_teacher
from tests.support.shared_data import SHARED_DATA

TEMPLATES = sorted((SHARED_DATA / "chat-templates").glob("*.jinja"))
# Keys in the file's order, which is not sorted order (a sorted copy starts {"function": ..., "type": ...}).
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "multiply",
            "description": "Multiply two integers.",
            "parameters": {
                "type": "object",
                "properties": {"b": {"type": "integer"}, "a": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
]
CALL = {"id": "call_1", "type": "function", "function": {"name": "multiply", "arguments": '{"a": 12, "b": 13}'}}
AGENT = [
    {"role": "user", "content": "What is 12 times 13?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "name": "multiply", "content": "156"},
    {"role": "assistant", "content": "<think>\nThe tool says 156.\n</think>\n\n12 times 13 is 156."},
]
TAU = [*AGENT[:3], {"role": "assistant", "content": "It is 156."}, {"role": "user", "content": "Thanks! ###STOP###"}]
# LLaMA-Factory's own reasoning + tool-use form: typed `value` parts, the call as JSON text, the schemas as JSON text
CALL_PART = {"type": "tool_call", "value": json.dumps({"name": "multiply", "arguments": {"a": 12, "b": 13}})}
FACTORY = [
    {"role": "user", "content": [{"type": "text", "value": "What is 12 times 13?"}]},
    {"role": "assistant", "content": [{"type": "reasoning", "value": "I should multiply."}, CALL_PART]},
    {"role": "tool", "content": [{"type": "text", "value": "156"}]},
    {"role": "assistant", "content": [{"type": "reasoning", "value": "It says 156."}, {"type": "text", "value": "1"}]},
]
RECORDS = [
    {"id": "agent", "messages": AGENT, "tools": TOOLS},
    {"id": "tau", "messages": TAU, "tools": json.dumps(TOOLS)},  # tools as JSON text, as tau-bench exports hold them
    {"id": "factory", "messages": FACTORY, "tools": json.dumps(TOOLS)},
]


@pytest.fixture(scope="module")
def stored_rows(tmp_path_factory):
    """The records ingested into a real DuckDB file by the ingest task: the file, the state and the ingest's log."""
    if not TEMPLATES:
        pytest.skip(f"real chat templates not found at {SHARED_DATA / 'chat-templates'}")
    root = tmp_path_factory.mktemp("one-score")
    path = root / "agents.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    home = StateDir(root / "state")
    home.root.mkdir(parents=True)
    with Store.open(home.duckdb) as store:
        run = store.start_run("curate-teacher", {})
    got = ingest_teacher.fn(home.duckdb, run, "input", str(path))
    with Reader.open(home.duckdb) as store:
        (log,) = store.ingest_log(run)
        ids = [t.trajectory_id for t in store.get_trajectories(teacher="input")]
    return path, home, ids, got, log


def test_an_agent_trajectory_ending_on_a_user_turn_is_stored_with_its_dropped_turn_counted(stored_rows):
    path, home, ids, got, log = stored_rows
    assert (got.records, got.read, got.quarantined, got.dropped_turns) == (3, 3, 0, 1)
    assert (log.records, log.stored, log.repeats, log.dropped_turns) == (3, 3, 0, 1)
    with Reader.open(home.duckdb) as store:
        agent, tau, factory = store.get_trajectories(ids)
        _, rows = store.query("SELECT tools, dropped_turns FROM trajectories ORDER BY source_line")
    assert [r[1] for r in rows] == [0, 1, 0] and tau.response == "It is 156." and tau.messages[-1].role == "assistant"
    assert factory.response == "<think>\nIt says 156.\n</think>\n\n1" and factory.messages[1].tool_calls
    assert agent.tools == tau.tools == TOOLS and list(json.loads(rows[0][0])[0]) == ["type", "function"]  # file order


def _student(smollm: Student, template: str, name: str) -> Student:
    """The embedded student with a real template (its control tokens read as text by SmolLM2's tokenizer: the same
    tokens on every path)."""
    digest = hashlib.sha256(name.encode()).hexdigest()  # one student id per template in the one DuckDB file
    options = {"thinking": True} if "DeepSeek-V3.1" in name else {}
    return dataclasses.replace(smollm, chat_template=template, digest=digest, chat_template_kwargs=options)


def _key(s) -> tuple:
    return (s.n_tokens, s.sum_rank, s.sum_surprisal)


def _prepared(student: Student, messages, tools) -> tuple:
    try:
        p = student.prepare(messages, tools=tools)
    except RecordError as err:
        return ("refused", str(err))
    return (p.ids, p.scored, p.kinds)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_every_path_gives_the_scorer_the_same_tokens(smollm, stored_rows, template):
    """What each command hands the scorer, tokenised: the score flow's shard (read back from DuckDB), `rsr explain`'s
    stored trajectory, and the file as `rsr score`, `--tokens` and `explain --file` read it. The scorer is a pure
    function of these (prompt reuse and batch invariance: test_prompt_reuse.py), so equal tokens are equal bits; the
    numbers themselves are compared on one template below."""
    path, home, ids, _, _ = stored_rows
    student = _student(smollm, template.read_text(), template.stem)
    shard = {i[0]: _prepared(student, i[1], i[2]) for i in _shard(home, ids)}
    with Reader.open(home.duckdb) as store:
        kept = {t.trajectory_id: _prepared(student, t.messages, t.tools) for t in store.get_trajectories(ids)}
    read = {t.trajectory_id: _prepared(student, t.messages, t.tools) for t in read_score_input(path).trajectories}
    assert shard == kept == read and len(read) == 3
    factory = read[ids[2]]
    assert factory[0] == "refused" or "reasoning" in factory[2]  # LLaMA-Factory's reasoning parts, scored as reasoning


def test_stored_score_tokens_and_explain_agree_bit_for_bit(smollm, stored_rows, tmp_path):
    """The numbers, on a template that prints the schemas (Qwen2.5's `tools | tojson`): the stored score row, `rsr
    score`, the sum of its `--tokens` rows and both `rsr explain` pages, equal with ==."""
    path, home, ids, _, _ = stored_rows
    template = SHARED_DATA / "chat-templates" / "Qwen2.5-7B-Instruct.jinja"
    student = _student(smollm, template.read_text(), template.stem)
    items = _shard(home, ids[1:2])  # the tau row (its closing user turn dropped at ingest), as the score flow reads
    # it back from DuckDB and its shard task scores it
    results = student.score([i[1] for i in items], progress=False, tools=[i[2] for i in items])
    with Store.open(home.duckdb) as store:
        store.add_scores([r.to_score(i[0], student.student_id) for i, r in zip(items, results, strict=True)], None)
        stored = store.stored_score(ids[1], student.student_id, "float32", student.context_length)
        [kept] = store.get_trajectories(ids[1:2])
    [t] = [t for t in read_score_input(path).trajectories if t.trajectory_id == ids[1]]
    tokens = tmp_path / "tokens.parquet"
    [scored] = score_stream(student, [t], None, tokens)  # `rsr score FILE --tokens tokens.parquet`
    rows = pq.read_table(tokens).to_pylist()
    summed = TrajectoryStats.from_tokens([r["rank"] for r in rows], [r["surprisal"] for r in rows])
    _, explained = explain_page(student, kept.messages, title="stored", stored=stored, tools=kept.tools)
    _, explained_file = explain_page(student, t.messages, title="file", tools=t.tools)
    assert '"multiply", "description"' in student.render(t.messages, t.tools)[0]  # the schemas in the file's order
    assert _key(scored.stats) == _key(stored) == _key(summed) == _key(explained) == _key(explained_file)
    assert scored.stats.rsr == stored.rsr and stored.n_tool_tokens > 0
