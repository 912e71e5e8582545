"""`messages` adapter: records holding an HF/OpenAI chat (`messages`: [{role, content}, ...]) in JSONL, a JSON list,
Parquet or an HF dataset.

Optional fields: `id` (-> source_id), `teacher` (else the teacher argument), `answer` (gold), `problem_id`,
`declared_answer`, `problem` (else the opening user turn). Turns may hold their reasoning in its own key
(`reasoning_content`, `reasoning`: joined into the content), text content parts, tool calls and tool turns.
The response is the last message, which must be the assistant's.
"""

from __future__ import annotations

from rsr.curate.ingest._common import (
    RecordError,
    answer_str,
    chat_problem,
    opt_id,
    opt_str,
    parse_messages,
    pick_teacher,
)
from rsr.records import Message, Trajectory


def record_to_trajectory(rec: dict, line: int, *, source_file: str, teacher: str | None) -> Trajectory:
    if "messages" not in rec:
        raise RecordError("missing `messages`")
    return chat_trajectory(rec, parse_messages(rec["messages"]), line, source_file=source_file, teacher=teacher)


def chat_trajectory(
    rec: dict, messages: list[Message], line: int, *, source_file: str, teacher: str | None
) -> Trajectory:
    """A parsed chat + the record's optional fields -> Trajectory (shared by the messages and sharegpt adapters)."""
    explicit = rec.get("problem")
    problem, problem_id = chat_problem(messages, explicit if opt_str(explicit, "`problem`") else None)
    return Trajectory.build(
        teacher=pick_teacher(rec.get("teacher"), "`teacher`", teacher),
        problem=problem,
        messages=messages,
        problem_id=opt_str(rec.get("problem_id"), "`problem_id`") or problem_id,
        source_id=opt_id(rec.get("id"), "`id`"),
        gold_answer=answer_str(rec.get("answer")),
        declared_answer=answer_str(rec.get("declared_answer"), "`declared_answer`"),
        source_file=source_file,
        source_line=line,
    )
