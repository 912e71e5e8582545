"""`messages` adapter: records holding a chat (HF/OpenAI `messages`: [{role, content}, ...]; ShareGPT
`conversations`: [{from, value}, ...]) in JSONL, a JSON list, Parquet or an HF dataset; the chat may sit in any
column or dotted path (`--map messages=traj`: tau-bench).

Optional fields (plan.CHAT_FIELDS): `id` (-> source_id), `teacher` (else the teacher argument), `answer` (gold),
`problem_id`, `declared_answer`, `problem` (else the opening user turn), `tools` (function schemas), `system` (a
top-level system prompt: ShareGPT's), `reasoning` (a top-level reasoning beside the chat, joined into the last
assistant turn; read only when mapped). Turns may hold their reasoning in its own key (`reasoning_content`,
`reasoning`) or in reasoning parts (joined into the content), text parts, tool calls (or tool-call parts) and tool
turns. The response is the last assistant turn: turns after it (an agent trajectory's closing user turn or tool
result) are dropped and counted (Trajectory.dropped_turns).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rsr.curate.ingest._common import (
    MISSING,
    SHAREGPT_ROLES,
    RecordError,
    answer_str,
    chat_problem,
    check_text,
    drop_trailing_turns,
    lookup,
    opt_id,
    opt_str,
    parse_messages,
    parse_tools,
    pick_teacher,
)
from rsr.records import THINK_OPEN, Message, Trajectory, join_reasoning


def record_to_trajectory(
    rec: dict, line: int, *, source_file: str, teacher: str | None, fields: Mapping[str, str], sharegpt: bool = False
) -> Trajectory:
    def get(field: str) -> tuple[Any, str]:
        column = fields.get(field)
        value = MISSING if column is None else lookup(rec, column)
        return (None if value is MISSING else value), f"`{column or field}`"

    column = fields["messages"]
    chat = lookup(rec, column)
    if chat is MISSING:
        raise RecordError(f"missing `{column}`")
    messages, dropped = drop_trailing_turns(parse_messages(chat, f"`{column}`", SHAREGPT_ROLES if sharegpt else None))
    system = get("system")
    if opt_str(*system) and messages[0].role != "system":
        messages.insert(0, Message(role="system", content=check_text(*system)))
    reasoning = opt_str(*get("reasoning"))
    if reasoning is not None:
        messages[-1] = _with_reasoning(messages[-1], reasoning, get("reasoning")[1])
    explicit = opt_str(*get("problem"))
    problem, problem_id = chat_problem(messages, get("problem")[0] if explicit else None)
    return Trajectory.build(
        teacher=pick_teacher(*get("teacher"), teacher),
        problem=problem,
        messages=messages,
        problem_id=opt_str(*get("problem_id")) or problem_id,
        source_id=opt_id(*get("id")),
        gold_answer=answer_str(*get("answer")),
        declared_answer=answer_str(*get("declared_answer")),
        tools=parse_tools(*get("tools")),
        source_file=source_file,
        source_line=line,
        dropped_turns=dropped,
    )


def _with_reasoning(last: Message, reasoning: str, what: str) -> Message:
    """A top-level reasoning (dolphin-r1) joined in front of the final assistant turn."""
    if last.role != "assistant":
        raise RecordError(f"{what} is given but the chat does not end with an assistant turn")
    if THINK_OPEN in (last.content or ""):
        raise RecordError(f"{what} is given but the last assistant turn already holds a {THINK_OPEN} block: ambiguous")
    return last.model_copy(update={"content": join_reasoning(check_text(reasoning, what), last.content)})
