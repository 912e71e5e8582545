"""`messages` adapter: records holding an HF chat (`messages`: [{role, content}, ...]) in JSONL, a JSON list or Parquet.

Optional fields: `id` (-> source_id), `teacher` (else the teacher argument), `answer` (gold), `problem_id`.
The problem is the last user turn; the response is the last assistant turn after it.
"""

from __future__ import annotations

from rsr.ingest._common import RecordError, answer_str, opt_id, opt_str, parse_messages, pick_teacher, split_chat
from rsr.records import Trajectory


def record_to_trajectory(rec: dict, line: int, *, source_file: str, teacher: str | None) -> Trajectory:
    if "messages" not in rec:
        raise RecordError("missing `messages`")
    messages = parse_messages(rec["messages"])
    problem = split_chat(messages)
    return Trajectory.build(
        teacher=pick_teacher(rec.get("teacher"), "`teacher`", teacher),
        problem=problem,
        messages=messages,
        problem_id=opt_str(rec.get("problem_id"), "`problem_id`"),
        source_id=opt_id(rec.get("id"), "`id`"),
        gold_answer=answer_str(rec.get("answer")),
        declared_answer=answer_str(rec.get("declared_answer"), "`declared_answer`"),
        source_file=source_file,
        source_line=line,
    )
