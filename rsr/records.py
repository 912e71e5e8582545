"""The records that flow through the DAG. Pydantic at the boundaries; ids are content hashes."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, Field, field_validator


class RecordError(ValueError):
    """One input record is unusable (ingest) or unscorable (scoring); the message is the reason, others go on."""


def _digest(*parts: str) -> str:
    data = b"".join(part.encode("utf-8", "surrogatepass") + b"\x00" for part in parts)
    return hashlib.sha256(data).hexdigest()[:20]


def normalize_text(text: str) -> str:
    """Normalisation under which two problem/response texts count as the same (NFKC, case, whitespace)."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().lower()


def problem_id_for(problem: str) -> str:
    """Teachers' outputs on the same problem meet on this id."""
    return "p-" + _digest(normalize_text(problem))


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def join_reasoning(reasoning: str | None, answer: str | None) -> str:
    """Reasoning held outside the content (`reasoning_content`, a reasoning column) joined to the answer in the one
    form every stage sees: `<think>\n{reasoning}\n</think>\n\n{answer}`, newlines at the seams trimmed. It is the
    form Qwen3's template renders and R1/QwQ generate, so the scored and the published text are the same."""
    answer = answer or ""
    if reasoning is None or not reasoning.strip():
        return answer
    return f"{THINK_OPEN}\n{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n{answer.lstrip(chr(10))}"


class Message(BaseModel):
    """One chat turn. Reasoning is already joined into `content` (join_reasoning); an assistant turn that only calls
    tools may have `content` None. `tool_calls` are kept as the data gives them (OpenAI form:
    [{"type": "function", "function": {"name", "arguments"}}]); other keys are ignored (pydantic's default)."""

    role: str  # system | user | assistant | tool
    content: str | None = ""
    tool_calls: list[dict] | None = None
    name: str | None = None  # a tool's name on a tool turn
    tool_call_id: str | None = None

    @field_validator("tool_calls")
    @classmethod
    def _wire_form(cls, calls: list[dict] | None) -> list[dict] | None:
        """Each call in OpenAI's wire form, arguments as JSON text: one type for every row of a published dataset
        (Arrow cannot hold dict arguments beside string ones), and what the scorer renders is what is published."""
        if not calls:
            return None
        out = []
        for i, call in enumerate(calls):
            fn = call.get("function", call) if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise ValueError(f"tool call {i} has no function name")
            args = fn.get("arguments", {})
            text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            wire = {"type": call.get("type") or "function", "function": {"name": fn["name"], "arguments": text}}
            out.append(wire | ({"id": str(call["id"])} if call.get("id") is not None else {}))
        return out

    def for_template(self) -> dict:
        """The dict a chat template sees: role and content always (None stays None: R1's template tests `is none`),
        the tool keys only when present (Llama 3.1's tests `'tool_calls' in message`)."""
        out: dict = {"role": self.role, "content": self.content}
        for key in ("tool_calls", "name", "tool_call_id"):
            if (value := getattr(self, key)) is not None:
                out[key] = value
        return out


class Problem(BaseModel):
    problem_id: str
    text: str
    gold_answer: str | None = None
    source: str | None = None  # file the gold answer came from


class Trajectory(BaseModel):
    """One teacher's answer to one problem, as a chat, with where it came from."""

    trajectory_id: str
    source_id: str | None = None  # the input record's own `id`, if it had one
    teacher: str
    problem_id: str
    problem: str
    messages: list[Message]  # prompt turns + the assistant response turn(s)
    response: str  # text of the (last) assistant turn: what is verified, deduplicated, published
    declared_answer: str | None = None  # an answer field the teacher emitted (e.g. zeroeval's JSON `answer`)
    gold_answer: str | None = None
    source_file: str
    source_line: int  # 1-based line (JSONL/CSV) or 0-based index (JSON list, Parquet, HF dataset)
    generation: int | None = None  # which of a row's several generations (OpenR1's `generations`), 0-based
    teacher_correct: bool | None = None  # the input's own correctness flag (e.g. correctness_math_verify), kept
    tools: list[dict] | None = None  # the function schemas offered (a chat template's `tools`), as the data gives them
    # Turns after the last assistant turn (an agent trajectory's closing user turn or tool result), dropped at ingest
    # and counted: the chat ends with the response. Not part of the id (trailing turns add nothing to a response).
    dropped_turns: int = 0

    @classmethod
    def build(cls, *, teacher: str, problem: str, messages: list[Message], **kw) -> Trajectory:
        last = next((m for m in reversed(messages) if m.role == "assistant"), None)
        response = (last.content or "") if last else ""
        pid = kw.pop("problem_id", None) or problem_id_for(problem)
        calls = [json.dumps(last.tool_calls, sort_keys=True, ensure_ascii=False)] if last and last.tool_calls else []
        return cls(
            # the same on re-ingest, which then adds nothing; a tool-calling turn also by its calls; and by the
            # whole prompt, so two prompts (system, earlier turns, tools) are never one trajectory
            trajectory_id="t-" + _digest(teacher, pid, response, *calls, *_prompt_parts(messages, kw.get("tools"))),
            teacher=teacher,
            problem_id=pid,
            problem=problem,
            messages=messages,
            response=response,
            **kw,
        )


def _prompt_parts(messages: list[Message], tools: list[dict] | None) -> list[str]:
    """What a trajectory's id adds for its prompt: nothing for the plain [user problem, response] chat (so those
    ids stay as they were), else the prompt turns and tools as canonical JSON."""
    prompt = messages[:-1]
    if not tools and len(prompt) == 1 and prompt[0].role == "user" and not prompt[0].tool_calls:
        return []
    turns = [m.for_template() for m in prompt]
    return ["prompt", json.dumps([turns, tools or None], sort_keys=True, ensure_ascii=False)]


class Rejected(BaseModel):
    """A record that could not be ingested: quarantined with its place and reason, never dropped."""

    source_file: str
    source_line: int
    reason: str
    raw: str = Field(default="", description="the raw text, cut to a bounded size")


DupKind = Literal["exact", "near"]


class Duplicate(BaseModel):
    trajectory_id: str
    dup_of: str  # the kept trajectory (first seen)
    similarity: float
    kind: DupKind


class Verdict(BaseModel):
    trajectory_id: str
    verdict: Literal["correct", "incorrect", "no_answer", "no_gold", "error"]
    extracted_answer: str | None = None
    gold_answer: str | None = None
    detail: str | None = None  # why: extraction rule used, or the error


class Score(BaseModel):
    """One student's RSR statistics for one trajectory, keyed by (trajectory, student, dtype, max_tokens, r_max,
    metric version): everything that changes its value."""

    trajectory_id: str
    student_id: str
    metric_version: str
    r_max: int
    dtype: str | None = None  # the compute dtype it was made in ("bfloat16", "float32"); required to store it
    max_tokens: int | None = None  # the effective truncation limit it was made with (None: not recorded)
    n_tokens: int = 0
    sum_rank: float = 0.0
    sum_surprisal: float = 0.0
    sum_rank_unclipped: float = 0.0
    rsr: float | None = None
    mean_rank: float | None = None
    mean_surprisal: float | None = None
    mean_rank_unclipped: float | None = None
    truncated: bool = False
    error: str | None = None
    # What the scored tokens covered (they add up to n_tokens) and how the chat was rendered ("template": the
    # student's template as is; "generation": prompt + response, for templates that rewrite assistant text).
    n_reasoning_tokens: int = 0
    n_answer_tokens: int = 0
    n_tool_tokens: int = 0
    render: str | None = None
    dropped_tool_calls: int = 0  # tool calls of scored turns the template renders no text for (none scored)
    surprisal_profile: list[float] | None = None  # share of the surprisal in each tenth of the response (metric.py)
    # Companion metrics from the same pass (rsr.metric); None on rows scored before they were stored (schema v10).
    sum_entropy: float | None = None
    mean_entropy: float | None = None  # the student's full-vocabulary entropy per scored position, averaged (nats)
    n_top1: int | None = None
    top1_share: float | None = None  # the share of scored tokens whose rank is 1
