"""`table` adapter: flat rows (JSONL, JSON list, CSV/TSV, Parquet, HF) with a field mapping.

The mapping (resolved by rsr.curate.ingest.plan) names, for each of our fields, the column or dotted path holding
it, e.g. `{"problem": "question", "response": "output", "teacher": "model", "answer": "info.gold", "id": "qid"}`.
Required: response, and problem or prompt. `prompt`: a message list (system and earlier turns; its opening user
turn is the problem unless `problem` is mapped) or a text (the problem). `generations` is this adapter with a
preset mapping (OpenR1-Math-220k: response=generations, correctness=correctness_math_verify, id=uuid).

Reasoning in its own column (`reasoning`) is joined into the response (join_reasoning). A list column expands:
`response=generations` gives one trajectory per element; a `reasoning` list pairs with a response list of equal
length, and a scalar or one-element list on either side is shared by all (s1K's one-element
`thinking_trajectories` beside a string `attempt`). `correctness`: a bool, or a list of bools aligned with the
responses, kept as teacher_correct.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from rsr.curate.ingest._common import (
    MISSING,
    RecordError,
    answer_str,
    check_problem,
    invalid_reason,
    lookup,
    opt_id,
    opt_str,
    parse_messages,
    parse_tools,
    pick_teacher,
    req_str,
    type_name,
)
from rsr.records import THINK_OPEN, Message, Trajectory, join_reasoning

REQUIRED = ("response",)  # and problem or prompt
_BOOLS = {"true": True, "false": False, "1": True, "0": False}  # CSV cells hold text


def record_to_trajectories(
    rec: dict, line: int, *, source_file: str, teacher: str | None, mapping: dict[str, str]
) -> list[Trajectory | RecordError]:
    """One trajectory per response (a list column gives several, each with its generation index); a bad
    generation is one RecordError in the list, a problem with the whole row is raised. `mapping`: field -> column
    or dotted path (rsr.curate.ingest.plan)."""

    def get(field: str) -> tuple[Any, str]:
        """The value of our field in this row (MISSING if its column is absent), and how an error names it."""
        column = mapping.get(field)
        if column is None:
            return MISSING, field
        return lookup(rec, column), f"column `{column}`" + (f" (mapped to {field})" if column != field else "")

    for field in ("response", "problem" if get("prompt")[0] in (MISSING, None) else "prompt"):
        if get(field)[0] is MISSING:
            hint = "" if mapping.get(field) != field else " (pass a mapping, e.g. problem=question response=output)"
            raise RecordError(f"missing {get(field)[1]}{hint}")
    prompt, problem = _prompt(*get("prompt"), *get("problem"))
    (response_value, response_what), (reasoning_value, reasoning_what) = get("response"), get("reasoning")
    if response_value is None:
        req_str(response_value, response_what)  # raises "missing column ..."
    responses, reasonings = _listed(response_value, response_what), _listed(_value(reasoning_value), reasoning_what)
    n = _width(responses, reasonings, response_what, reasoning_what)
    correct = _correctness(*_got(get("correctness")), n)
    system = opt_str(*_got(get("system")))
    if system and not any(m.role == "system" for m in prompt):
        prompt.insert(0, Message(role="system", content=system))
    common = {
        "teacher": pick_teacher(*_got(get("teacher")), teacher),
        "problem": problem,
        "problem_id": opt_id(*_got(get("problem_id"))),
        "source_id": opt_id(*_got(get("id"))),
        "gold_answer": answer_str(*_got(get("answer"))),
        "declared_answer": answer_str(*_got(get("declared_answer"))),
        "tools": parse_tools(*_got(get("tools"))),
        "source_file": source_file,
        "source_line": line,
    }
    several = isinstance(response_value, list) or n > 1  # a row of generations: each one numbered
    out: list[Trajectory | RecordError] = []
    for i in range(n):
        response = responses[i % len(responses)]  # a one-item side is shared by all
        reasoning = reasonings[i % len(reasonings)] if reasonings else None
        try:
            content = _content(response, reasoning, response_what, reasoning_what)
            turns = [*prompt, Message(role="assistant", content=content)]
            gen = i if several else None
            out.append(Trajectory.build(messages=turns, generation=gen, teacher_correct=correct[i], **common))
        except RecordError as e:
            out.append(RecordError(f"generation {i} of {n}: {e}") if several else e)
        except ValidationError as e:
            out.append(RecordError(f"generation {i} of {n}: {invalid_reason(e)}" if several else invalid_reason(e)))
    return out


def _value(value: Any) -> Any:
    return None if value is MISSING else value


def _got(pair: tuple[Any, str]) -> tuple[Any, str]:
    """An optional field's (value, name): absent reads as null."""
    return _value(pair[0]), pair[1]


def _prompt(prompt: Any, prompt_what: str, problem: Any, problem_what: str) -> tuple[list[Message], str]:
    """The prompt turns and the problem text: a message-list `prompt` (its opening user turn is the problem unless
    one is mapped), a text `prompt` (the problem), else the `problem` column as the one user turn."""
    if isinstance(prompt, list):
        turns = parse_messages(prompt, prompt_what)
        users = [m for m in turns if m.role == "user"]
        if not users:
            raise RecordError(f"{prompt_what} has no user turn")
        if turns[-1].role == "assistant":
            raise RecordError(f"{prompt_what} ends with an assistant turn: the response is its own column")
        text = problem if isinstance(problem, str) and problem.strip() else users[0].content or ""
        return turns, check_problem(req_str(text, problem_what if text is problem else f"{prompt_what} user turn"))
    if prompt not in (MISSING, None):
        problem, problem_what = prompt, prompt_what
    text = check_problem(req_str(_value(problem), problem_what), problem_what)
    return [Message(role="user", content=text)], text


def _listed(value: Any, what: str) -> list[Any]:
    """A column's values: a list as it is (an empty one is an error), a scalar as one, null as none."""
    if value is None:
        return []
    if isinstance(value, list):
        if not value:
            raise RecordError(f"{what} is an empty list")
        return value
    return [value]


def _width(responses: list, reasonings: list, response_what: str, reasoning_what: str) -> int:
    """How many trajectories the row gives: the responses and reasonings pair up, one item is shared by all."""
    n, m = len(responses), len(reasonings)
    if m in (0, 1) or n == 1 or m == n:
        return max(n, m)
    raise RecordError(f"{reasoning_what} has {m} items but {response_what} has {n}: they must pair up")


def _content(response: Any, reasoning: Any, response_what: str, reasoning_what: str) -> str:
    """One response's text with its reasoning joined in front; reasoning both apart and inline is ambiguous."""
    response = req_str(response, response_what)
    if reasoning is None or opt_str(reasoning, reasoning_what) is None:
        return response
    if THINK_OPEN in response:
        raise RecordError(
            f"{reasoning_what} is given but {response_what} already holds a {THINK_OPEN} block: ambiguous"
        )
    return join_reasoning(reasoning, response)


def _correctness(value: Any, what: str, n: int) -> list[bool | None]:
    """teacher_correct for each of the n responses: a list of equal length, or one flag for one response."""
    if value is None:
        return [None] * n
    values = value if isinstance(value, list) else [value]
    if len(values) != n:
        raise RecordError(f"{what} has {len(values)} value(s) but the row has {n} response(s): they must align")
    return [_flag(v, what) for v in values]


def _flag(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    if isinstance(value, str) and not value.strip():
        return None
    raise RecordError(f"{what} must hold booleans, got {type_name(value)} {str(value)[:20]!r}")
