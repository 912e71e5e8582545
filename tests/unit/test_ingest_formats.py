"""Ingest of the public reasoning datasets' schemas, on small records written here in each schema (never real rows):
ShareGPT `conversations`, rows of several `generations`, reasoning in its own field or column, list columns, agent
chats with tool calls, content-part lists, multi-turn problem ids, and HF datasets' config/split/revision."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rsr.curate.ingest import detect_format, ingest_file, top_reasons
from rsr.records import Rejected, join_reasoning, problem_id_for

REASONING = "Let me think. 3 times 4 is 12, minus 5 is 7."  # each test's reasoning tokens: all must be kept


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_parquet(path: Path, records: list) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def final_content(traj) -> str:
    return traj.messages[-1].content or ""


def assert_reasoning_kept(traj, reasoning: str = REASONING) -> None:
    """Every token of the reasoning is in the final assistant turn, which is the trajectory's response."""
    assert traj.messages[-1].role == "assistant"
    for token in reasoning.split():
        assert token in final_content(traj), f"reasoning token {token!r} lost"
    assert traj.response == final_content(traj)


# ---- ShareGPT `conversations` (OpenThoughts-114k, Bespoke-Stratos-17k) -----------------------------------------------

THOUGHT = f"<|begin_of_thought|>\n{REASONING}\n<|end_of_thought|>\n\n<|begin_of_solution|>\n7\n<|end_of_solution|>"


def sharegpt_row(prompt: str, reply: str = THOUGHT, user: str = "user", assistant: str = "assistant", **extra):
    turns = [{"from": user, "value": prompt}, {"from": assistant, "value": reply}]
    return {"system": "Think step by step, then answer.", "conversations": turns, **extra}


@pytest.mark.parametrize("writer", [write_jsonl, write_parquet], ids=["jsonl", "parquet"])
def test_sharegpt_openthoughts_and_bespoke_rows_are_detected_and_read(tmp_path, writer):
    rows = [
        sharegpt_row("What is 3*4-5?"),  # OpenThoughts: user/assistant
        sharegpt_row("What is 2*4-1?", user="human", assistant="gpt"),  # Bespoke-Stratos: human/gpt
    ]
    path = writer(tmp_path / f"sharegpt.{'jsonl' if writer is write_jsonl else 'parquet'}", rows)
    assert detect_format(path) == "sharegpt"
    result = ingest_file(path, teacher="r1")
    assert result.rejected == []
    first, second = result.trajectories
    assert [m.role for m in first.messages] == ["system", "user", "assistant"]
    assert first.messages[0].content == "Think step by step, then answer."
    assert (first.problem, first.problem_id) == ("What is 3*4-5?", problem_id_for("What is 3*4-5?"))
    assert second.problem == "What is 2*4-1?" and [m.role for m in second.messages] == ["system", "user", "assistant"]
    for traj in result.trajectories:
        assert_reasoning_kept(traj)


def test_sharegpt_role_content_turns_optional_fields_and_a_leading_system_turn(tmp_path):
    rows = [
        {
            "system": "ignored: the chat opens with its own system turn",
            "conversations": [
                {"role": "system", "content": "Own system."},
                {"role": "user", "content": "Name a prime."},
                {"role": "assistant", "content": "2"},
            ],
            "id": 11,
            "teacher": "m1",
            "answer": "2",
        },
        sharegpt_row("Tell me 1+1.", problem="What is 1+1?", problem_id="p-given"),
        {"conversations": [{"from": "narrator", "value": "x"}]},
    ]
    result = ingest_file(write_jsonl(tmp_path / "c.jsonl", rows), teacher="fallback")
    own, explicit = result.trajectories
    assert [m.content for m in own.messages if m.role == "system"] == ["Own system."]
    assert (own.source_id, own.teacher, own.gold_answer) == ("11", "m1", "2")
    assert (explicit.problem, explicit.problem_id) == ("What is 1+1?", "p-given")
    (bad,) = result.rejected
    assert bad.source_line == 3 and "message 0 has unknown from 'narrator'" in bad.reason


def test_sharegpt_tool_and_function_call_turns_map_to_our_roles(tmp_path):
    row = {
        "conversations": [
            {"from": "human", "value": "Weather in Paris?"},
            {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Paris"}}'},
            {"from": "observation", "value": '{"temp": 21}'},
            {"from": "gpt", "value": "It is 21 degrees."},
        ]
    }
    (traj,) = ingest_file(write_jsonl(tmp_path / "agent.jsonl", [row]), teacher="t").trajectories
    assert [m.role for m in traj.messages] == ["user", "assistant", "tool", "assistant"]
    assert traj.messages[1].content.startswith('{"name": "weather"') and traj.response == "It is 21 degrees."


# ---- several generations per row (OpenR1-Math-220k) ------------------------------------------------------------------


def openr1_row(generations: list, correctness: list, uuid: str = "u-1", problem: str = "Compute 3*4-5.") -> dict:
    return {
        "problem": problem,
        "solution": "3*4-5 = 7",
        "answer": "7",
        "uuid": uuid,
        "generations": generations,
        "correctness_math_verify": correctness,
        "messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": generations[0]}],
    }


def test_generations_row_gives_one_trajectory_per_generation_before_its_messages(tmp_path):
    gens = [f"<think>\n{REASONING}\n</think>\n\n\\boxed{{7}}", "", f"<think>\n{REASONING} Check.\n</think>\n\n7"]
    path = write_jsonl(tmp_path / "openr1.jsonl", [openr1_row(gens, [True, False, True])])
    assert detect_format(path) == "generations"  # not messages: OpenR1 rows hold one generation as `messages` too
    result = ingest_file(path, teacher="r1")
    first, third = result.trajectories
    assert [(t.generation, t.teacher_correct) for t in result.trajectories] == [(0, True), (2, True)]
    assert first.source_id == "u-1" and first.gold_answer == "7" and first.problem == "Compute 3*4-5."
    assert [m.role for m in first.messages] == ["user", "assistant"] and first.response == gens[0]
    assert third.response == gens[2] and first.problem_id == third.problem_id
    for traj in result.trajectories:
        assert_reasoning_kept(traj)
    (empty,) = result.rejected  # the empty generation alone is rejected, naming its index
    assert empty.source_line == 1 and "generation 1 of 3" in empty.reason and "is empty" in empty.reason


def test_generations_length_mismatch_duplicates_and_non_string_generations(tmp_path):
    rows = [
        openr1_row(["a", "b", "c"], [True, False], uuid="mismatch"),
        openr1_row(["same answer", "same answer", "other"], [True, True, False], uuid="dups", problem="P2"),
        {"id": 9, "problem": "P3", "generations": ["fine", 5], "correctness": [None, True]},
    ]
    result = ingest_file(write_jsonl(tmp_path / "g.jsonl", rows), teacher="r1")
    assert [(t.source_id, t.generation) for t in result.trajectories] == [("dups", 0), ("dups", 2), ("9", 0)]
    assert result.duplicates_skipped == 1  # identical generations of one row: the first kept
    assert result.trajectories[2].teacher_correct is None
    reasons = {r.source_line: r.reason for r in result.rejected}
    assert "has 2 value(s)" in reasons[1] and "3 response(s)" in reasons[1]
    assert "generation 1 of 2" in reasons[3] and "must be a string, got int" in reasons[3]


def test_generations_in_a_saved_hf_dataset_are_detected_the_same_way(tmp_path):
    import datasets

    rows = [openr1_row(["x1", "x2"], [True, False], uuid=f"u{i}", problem=f"P{i}") for i in range(2)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    result = ingest_file(tmp_path / "ds", teacher="r1")
    assert [(t.source_id, t.generation) for t in result.trajectories] == [("u0", 0), ("u0", 1), ("u1", 0), ("u1", 1)]


# ---- reasoning in its own field on chat messages (DeepSeek API, vLLM) ------------------------------------------------


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"], ids=["deepseek-api", "vllm"])
def test_message_reasoning_field_is_joined_into_the_content(tmp_path, key):
    record = {
        "messages": [
            {"role": "user", "content": "What is 3*4-5?"},
            {"role": "assistant", "content": "The answer is 7.", key: REASONING},
        ]
    }
    path = write_jsonl(tmp_path / "api.jsonl", [record])
    assert detect_format(path) == "messages"
    (traj,) = ingest_file(path, teacher="ds").trajectories
    assert final_content(traj) == join_reasoning(REASONING, "The answer is 7.")
    assert_reasoning_kept(traj)


def test_reasoning_field_beside_a_think_block_is_ambiguous(tmp_path):
    reply = {"role": "assistant", "content": "<think>inline</think>\n\n7", "reasoning_content": REASONING}
    record = {"messages": [{"role": "user", "content": "q"}, reply]}
    (bad,) = ingest_file(write_jsonl(tmp_path / "a.jsonl", [record]), teacher="t").rejected
    assert "message 1 (assistant) has both a reasoning field and a <think> block" in bad.reason


# ---- reasoning and list columns in the table mapping (s1K, OpenThoughts metadata) ------------------------------------


def test_s1k_style_table_one_element_reasoning_list_beside_a_string_attempt(tmp_path):
    rows = [{"question": "What is 3*4-5?", "thinking_trajectories": [REASONING], "attempt": "7", "solution": "7"}]
    path = write_parquet(tmp_path / "s1k.parquet", rows)
    assert detect_format(path) == "table"
    result = ingest_file(
        path, teacher="gemini", mapping="problem=question reasoning=thinking_trajectories response=attempt"
    )
    (traj,) = result.trajectories
    assert traj.generation is None and final_content(traj) == join_reasoning(REASONING, "7")
    assert_reasoning_kept(traj)


def test_openthoughts_metadata_style_reasoning_and_solution_columns(tmp_path):
    rows = [{"problem": "What is 3*4-5?", "deepseek_reasoning": REASONING, "deepseek_solution": "**7**"}]
    path = write_jsonl(tmp_path / "meta.jsonl", rows)
    result = ingest_file(
        path, teacher="r1", mapping={"reasoning": "deepseek_reasoning", "response": "deepseek_solution"}
    )
    (traj,) = result.trajectories
    assert traj.problem == "What is 3*4-5?" and traj.response == join_reasoning(REASONING, "**7**")
    assert_reasoning_kept(traj)


def test_table_list_columns_zip_broadcast_and_mismatch(tmp_path):
    rows = [
        {"q": "zip", "r": ["A", "B"], "why": [REASONING, "other reasoning"], "ok": [True, False]},
        {"q": "shared", "r": ["C", "D"], "why": REASONING},
        {"q": "mismatch", "r": ["E", "F", "G"], "why": ["1", "2"]},
        {"q": "think twice", "r": "<think>x</think>\n\nH", "why": REASONING},
    ]
    mapping = {"problem": "q", "response": "r", "reasoning": "why", "correctness": "ok"}
    result = ingest_file(write_jsonl(tmp_path / "t.jsonl", rows), teacher="t", mapping=mapping)
    a, b, c, d = result.trajectories
    assert [(t.generation, t.teacher_correct) for t in (a, b)] == [(0, True), (1, False)]
    assert a.response == join_reasoning(REASONING, "A") and b.response == join_reasoning("other reasoning", "B")
    assert [t.generation for t in (c, d)] == [0, 1] and all(REASONING in t.response for t in (c, d))
    reasons = {r.source_line: r.reason for r in result.rejected}
    assert "column `why` (mapped to reasoning) has 2 items but column `r` (mapped to response) has 3" in reasons[3]
    assert "ambiguous" in reasons[4]


def test_a_column_mapped_to_response_is_not_also_read_as_reasoning(tmp_path):
    rows = [{"question": "q", "reasoning": "the final text", "answer": "5"}]
    result = ingest_file(
        write_jsonl(tmp_path / "r.jsonl", rows), teacher="t", mapping="problem=question response=reasoning"
    )
    (traj,) = result.trajectories
    assert traj.response == "the final text" and "<think>" not in traj.response
    with pytest.raises(ValueError, match="response and reasoning to the same column"):
        ingest_file(write_jsonl(tmp_path / "r.jsonl", rows), mapping="problem=question response=x reasoning=x")


# ---- agent chats: tool turns, tool calls with null content -----------------------------------------------------------

CALL = [{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"expr": "3*4-5"}'}}]


def agent_chat(**extra) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You may call calc."},
            {"role": "user", "content": "What is 3*4-5?"},
            {"role": "assistant", "content": None, "tool_calls": CALL, "reasoning_content": REASONING},
            {"role": "tool", "content": "7", "name": "calc", "tool_call_id": "c1"},
            {"role": "function", "content": "7 (legacy)", "name": "calc"},
            {"role": "assistant", "content": "It is 7."},
        ],
        **extra,
    }


def test_agent_chat_keeps_tool_calls_null_content_and_tool_turns(tmp_path):
    only_calls = agent_chat()
    only_calls["messages"] = only_calls["messages"][:3]  # the response is a tool call
    only_calls["messages"][2] = {**only_calls["messages"][2], "reasoning_content": None}
    path = write_jsonl(tmp_path / "agent.jsonl", [agent_chat(), only_calls])
    result = ingest_file(path, teacher="t")
    assert result.rejected == []
    full, calling = result.trajectories
    assert [m.role for m in full.messages] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert full.messages[2].tool_calls == CALL and REASONING in full.messages[2].content  # reasoning kept
    assert full.messages[3].for_template() == {"role": "tool", "content": "7", "name": "calc", "tool_call_id": "c1"}
    assert full.problem == "What is 3*4-5?" and full.problem_id == problem_id_for("What is 3*4-5?")
    assert calling.messages[-1].for_template() == {"role": "assistant", "content": None, "tool_calls": CALL}


def test_agent_trajectories_ending_after_the_last_assistant_turn_drop_and_count_those_turns(tmp_path):
    """tau-bench's trajectories end with the simulated user's closing turn or a tool result: the turns after the last
    assistant turn are dropped and counted, per record and per file; the record is kept. An empty last assistant
    turn is still an error."""
    ends_in_tool = agent_chat()
    ends_in_tool["messages"] = ends_in_tool["messages"][:4]
    ends_in_user = agent_chat()
    ends_in_user["messages"] += [{"role": "user", "content": "Thanks!"}, {"role": "user", "content": "###STOP###"}]
    empty_final = agent_chat()
    empty_final["messages"][-1] = {"role": "assistant", "content": ""}
    null_final = agent_chat()
    null_final["messages"][-1] = {"role": "assistant", "content": None}
    records = [ends_in_tool, ends_in_user, empty_final, null_final]
    result = ingest_file(write_jsonl(tmp_path / "agent.jsonl", records), teacher="t")
    calling, answered = result.trajectories
    assert [m.role for m in calling.messages] == ["system", "user", "assistant"] and calling.dropped_turns == 1
    assert calling.messages[-1].tool_calls == CALL  # the response is the tool call
    assert answered.response == "It is 7." and answered.dropped_turns == 2 and len(answered.messages) == 6
    (alone,) = ingest_file(write_jsonl(tmp_path / "a.jsonl", [agent_chat()]), teacher="t").trajectories
    assert answered.trajectory_id == alone.trajectory_id  # trailing turns are not part of a trajectory's id
    assert result.dropped_turns == 3
    assert [r.reason for r in result.rejected] == [
        "the last assistant turn (message 5) is empty",
        "message 5 (assistant) content must be a string or a list of text parts, got null",
    ]


# ---- OpenAI content-part lists ---------------------------------------------------------------------------------------


def test_text_content_parts_are_joined_and_an_image_part_is_rejected(tmp_path):
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "3*4-5?"}]
    good = {
        "messages": [
            {"role": "user", "content": parts},
            {"role": "assistant", "content": [{"type": "text", "text": "7"}]},
        ]
    }
    image = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "x.png"}}]
    bad = {"messages": [{"role": "user", "content": image}, {"role": "assistant", "content": "a cat"}]}
    result = ingest_file(write_jsonl(tmp_path / "parts.jsonl", [good, bad]), teacher="t")
    (traj,) = result.trajectories
    assert traj.problem == "What is 3*4-5?" and traj.response == "7"
    (rejected,) = result.rejected
    assert "message 0 (user) content part 1 has type 'image_url'" in rejected.reason


def test_llamafactory_reasoning_and_tool_call_parts_are_reasoning_and_tool_calls(tmp_path):
    """LLaMA-Factory's own reasoning + tool-use form (`value` parts of type text, reasoning, tool_call; a `tools`
    column as JSON text): reasoning goes where a reasoning field goes, tool-call parts become tool calls."""
    tools = [{"type": "function", "function": {"name": "multiply", "parameters": {"type": "object"}}}]
    call = {"name": "multiply", "arguments": {"b": 13, "a": 12}}
    record = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "value": "What is 12 times 13?"}]},
            {"role": "assistant", "content": [
                {"type": "reasoning", "value": "I should multiply."},
                {"type": "tool_call", "value": json.dumps(call)},
            ]},
            {"role": "tool", "content": [{"type": "text", "value": "156"}]},
            {"role": "assistant", "content": [
                {"type": "reasoning", "value": "The tool says 156."}, {"type": "text", "value": "It is 156."},
            ]},
        ],
        "tools": json.dumps(tools),
    }  # fmt: skip
    result = ingest_file(write_jsonl(tmp_path / "lf.jsonl", [record]), teacher="t")
    assert result.rejected == []
    (traj,) = result.trajectories
    calling = traj.messages[1]
    assert calling.content == join_reasoning("I should multiply.", "") and calling.tool_calls == [
        {"type": "function", "function": {"name": "multiply", "arguments": '{"b": 13, "a": 12}'}}  # the file's order
    ]
    assert traj.response == join_reasoning("The tool says 156.", "It is 156.") and traj.tools == tools


def test_anthropic_and_mistral_thinking_parts_are_reasoning_and_other_parts_are_counted(tmp_path):
    anthropic = {"messages": [
        {"role": "user", "content": "What is 12 times 13?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "12 * 13 = 156.", "signature": "x"},
            {"type": "tool_use", "id": "toolu_1", "name": "check", "input": {"n": 156}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": [{"type": "text", "text": "Checked."}]}, {"type": "text", "text": "156"},
        ]},
    ]}  # fmt: skip
    media = [{"type": "text", "text": "See"}, {"type": "image_url", "image_url": {"url": "x.png"}}]
    images = {"messages": [
        {"role": "user", "content": media},
        {"role": "assistant", "content": [{"type": "text", "text": "a cat"}, {"type": "redacted_thinking"}]},
        {"role": "user", "content": media},
        {"role": "assistant", "content": "a dog"},
    ]}  # fmt: skip
    result = ingest_file(write_jsonl(tmp_path / "parts.jsonl", [anthropic, images]), teacher="t")
    (traj,) = result.trajectories
    assert traj.messages[1].content == join_reasoning("12 * 13 = 156.", "")
    assert traj.messages[1].tool_calls == [
        {"type": "function", "function": {"name": "check", "arguments": '{"n": 156}'}, "id": "toolu_1"}
    ]
    assert traj.response == join_reasoning("Checked.", "156")
    (rejected,) = result.rejected  # never scored without them: every such part named and counted, per record
    assert rejected.reason == (
        "message 0 (user) content part 1 has type 'image_url': only text, reasoning and tool-call parts can be "
        "scored (this record holds 2 x 'image_url', 1 x 'redacted_thinking')"
    )


# ---- multi-turn problems and their ids -------------------------------------------------------------------------------


def chat(*turns: str, teacher: str = "t") -> dict:
    roles = ["user", "assistant"] * len(turns)
    return {"teacher": teacher, "messages": [{"role": r, "content": c} for r, c in zip(roles, turns, strict=False)]}


def test_continue_chats_with_different_openers_get_different_problem_ids(tmp_path):
    rows = [
        chat("Write a poem.", "Roses...", "Continue.", "...are red."),
        chat("Sum 1..10.", "1+2...", "Continue.", "55"),
    ]
    a, b = ingest_file(write_jsonl(tmp_path / "c.jsonl", rows)).trajectories
    assert (a.problem, b.problem) == ("Write a poem.", "Sum 1..10.")  # the opening user turn
    assert a.problem_id != b.problem_id and problem_id_for("Continue.") not in (a.problem_id, b.problem_id)


def test_the_same_multi_turn_prompt_from_two_teachers_meets_on_one_problem_id(tmp_path):
    turns = ("Write a poem.", "Roses...", "Continue.")
    rows = [chat(*turns, "...are red.", teacher="t1"), chat(*turns, "...violets blue.", teacher="t2")]
    rows.append(
        {"teacher": "t3", "messages": [{"role": "system", "content": "Be kind."}, *chat(*turns, "x")["messages"]]}
    )
    result = ingest_file(write_jsonl(tmp_path / "m.jsonl", rows))
    assert len({t.problem_id for t in result.trajectories}) == 1  # system turns aside
    assert len(result.problems) == 1


def test_a_json_list_of_messages_records_is_detected(tmp_path):
    path = tmp_path / "chats.json"
    path.write_text(json.dumps([chat("What is 3*4-5?", "7"), chat("What is 1+1?", "2")]))
    assert detect_format(path) == "messages"
    result = ingest_file(path)
    assert [t.source_line for t in result.trajectories] == [0, 1] and result.rejected == []


# ---- HF datasets: config, split, revision ----------------------------------------------------------------------------


def test_saved_dataset_dict_split_and_config_select_what_is_read(tmp_path):
    import datasets

    def ds(prefix: str) -> datasets.DatasetDict:
        return datasets.DatasetDict(
            {s: datasets.Dataset.from_list([sharegpt_row(f"{prefix} {s} problem")]) for s in ("train", "test")}
        )

    ds("main").save_to_disk(str(tmp_path / "hub"))
    ds("metadata").save_to_disk(str(tmp_path / "hub" / "metadata"))
    both = ingest_file(tmp_path / "hub", teacher="t")
    assert [t.problem for t in both.trajectories] == ["main train problem", "main test problem"]
    test = ingest_file(tmp_path / "hub", teacher="t", hf_options={"split": "test"})
    assert [(t.problem, t.source_file) for t in test.trajectories] == [
        ("main test problem", f"{tmp_path / 'hub'}[test]")
    ]
    meta = ingest_file(tmp_path / "hub", teacher="t", hf_options={"config": "metadata", "split": "train"})
    assert [t.problem for t in meta.trajectories] == ["metadata train problem"]
    with pytest.raises(ValueError, match="no split 'validation'; it has train, test"):
        ingest_file(tmp_path / "hub", teacher="t", hf_options={"split": "validation"})
    with pytest.raises(ValueError, match="revision applies to hub datasets only"):
        ingest_file(tmp_path / "hub", teacher="t", hf_options={"revision": "main"})
    with pytest.raises(ValueError, match="unknown hf option"):
        ingest_file(tmp_path / "hub", hf_options={"subset": "x"})


def test_hub_dataset_is_loaded_with_config_split_and_revision(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(source, **kwargs):  # the hub is the one thing mocked: tests have no network
        calls.append((source, kwargs))
        return datasets.Dataset.from_list([sharegpt_row("hub problem")])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    options = {"config": "default", "split": "train", "revision": "abc123"}
    result = ingest_file("org/reasoning", fmt="hf", teacher="t", hf_options=options)
    assert calls == [("org/reasoning", {"name": "default", "split": "train", "revision": "abc123"})]
    (traj,) = result.trajectories
    assert traj.problem == "hub problem" and traj.source_file == "org/reasoning:default@abc123[train]"


def test_hf_options_on_a_plain_file_are_a_usage_error(tmp_path):
    with pytest.raises(ValueError, match="apply to HF datasets"):
        ingest_file(write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")]), hf_options={"split": "train"})


# ---- the most frequent quarantine reasons ----------------------------------------------------------------------------


def test_top_reasons_group_reasons_that_differ_in_numbers_and_quoted_values():
    def rejected(reason: str) -> Rejected:
        return Rejected(source_file="f", source_line=1, reason=reason)

    reasons = [
        "message 3 has unknown role 'x'",
        "message 5 has unknown role 'robot'",
        "broken JSON: at line 1 column 9",
    ]
    reasons += ['message 0 has unknown role "it\'s"', "the teacher's turn", "broken JSON: at line 1 column 12"]
    top = top_reasons([rejected(r) for r in reasons], n=2)
    # counted by pattern, each shown by its first example
    assert top == [("line 1: message 3 has unknown role 'x'", 3), ("line 1: broken JSON: at line 1 column 9", 2)]
    assert top_reasons([rejected("the teacher's turn")]) == [("line 1: the teacher's turn", 1)]


def test_csv_correctness_text_and_a_mapping_over_the_generations_preset(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("question,output,ok\nq1,a1,true\nq2,a2,False\nq3,a3,\nq4,a4,maybe\n", encoding="utf-8")
    result = ingest_file(path, teacher="t", mapping="problem=question response=output correctness=ok")
    assert [t.teacher_correct for t in result.trajectories] == [True, False, None]
    assert "column `ok` (mapped to correctness) must hold booleans" in result.rejected[0].reason
    rows = [{"problem": "P", "outputs": ["x", "y"], "generations": ["not read"], "uuid": "u"}]
    path = write_jsonl(tmp_path / "g.jsonl", rows)
    result = ingest_file(path, teacher="t", fmt="generations", mapping={"response": "outputs"})
    assert [(t.response, t.generation, t.source_id) for t in result.trajectories] == [("x", 0, "u"), ("y", 1, "u")]
