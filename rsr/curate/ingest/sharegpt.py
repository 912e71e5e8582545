"""`sharegpt` adapter: records holding a ShareGPT chat (OpenThoughts-114k, Bespoke-Stratos-17k):
{"system": "...", "conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}.

Turns may also be role/content dicts. Roles: human/user -> user; gpt/assistant/model/chatgpt/bot -> assistant;
system; tool/observation/function/ipython -> tool; function_call -> assistant (its value as the content).
A top-level `system` string becomes a leading system turn, unless the chat already opens with one.
Optional fields as for `messages` (id, teacher, answer, problem_id, declared_answer, problem).
"""

from __future__ import annotations

from rsr.curate.ingest._common import SHAREGPT_ROLES, RecordError, check_text, opt_str, parse_messages
from rsr.curate.ingest.messages import chat_trajectory
from rsr.records import Message, Trajectory


def record_to_trajectory(rec: dict, line: int, *, source_file: str, teacher: str | None) -> Trajectory:
    if "conversations" not in rec:
        raise RecordError("missing `conversations`")
    messages = parse_messages(rec["conversations"], "`conversations`", SHAREGPT_ROLES)
    system = rec.get("system")
    if opt_str(system, "`system`") and messages[0].role != "system":
        messages.insert(0, Message(role="system", content=check_text(system, "`system`")))
    return chat_trajectory(rec, messages, line, source_file=source_file, teacher=teacher)
