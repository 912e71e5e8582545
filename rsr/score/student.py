"""The student: render chats and score trajectories (the hot path). Loading a model is rsr/score/load.py.

    student = Student.load("smollm2-135m")
    results = student.score([messages, ...])          # one ScoredTrajectory per conversation, in order
    results[0].stats.rsr

Scored tokens = trained tokens: the tokens scored are exactly those an SFT trainer trains on for this student,
the body of each assistant turn as the student's chat template renders it (content and tool-call text; not the role
header, not the end-of-turn marker). Every other turn is context. A template that rewrites assistant text (drops or
re-renders `<think>` reasoning: R1-Distill, QwQ, Qwen3) is scored as the student generates: the prompt with the
generation prompt, then the final response verbatim (`render_mode` "generation"; see `Student.render_note`).

Exact and reproducible: ranks and surprisals are computed in float32 arithmetic from the final hidden state and the
LM head weights as the model holds them (the body may run in bfloat16, but no logit is ever rounded to bfloat16),
with the model's own logit scaling/softcapping applied in float32. Each trajectory goes through the model alone
(no padding, no batch-mates), so its score depends on the student and the trajectory, never on what else is scored.
"""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from pydantic import ValidationError
from tqdm.auto import tqdm

from rsr.metric import METRIC_VERSION, R_MAX, TrajectoryStats, surprisal_profile
from rsr.records import THINK_CLOSE, THINK_OPEN, Message, RecordError, Score, join_reasoning
from rsr.score import load as models
from rsr.settings import StateDir

__all__ = [
    "ExactHead",
    "Prepared",
    "RecordError",
    "Rendered",
    "ScoredTrajectory",
    "Student",
    "UnsupportedStudent",
    "reasoning_spans",
]


class UnsupportedStudent(ValueError):
    """The student's logits cannot be reproduced exactly (an architecture-specific logit transform we lack)."""


# ---------------------------------------------------------------------------------------------------------------
# The exact LM head
# ---------------------------------------------------------------------------------------------------------------
# Config attributes through which transformers' modeling code changes logits after the LM head, applied as the
# model's own forward does: Cohere `logits * logit_scale`, Granite `logits / logits_scaling`, Gemma 2/3
# `tanh(logits / cap) * cap`. Anything else is caught by the load-time check against the model's own logits.
_TRANSFORMS = (("logit_scale", "mul"), ("logits_scaling", "div"), ("final_logit_softcapping", "softcap"))
_OPS = {  # Gemma's softcap: logits / cap -> tanh -> * cap, three float32 ops as in its forward
    "mul": lambda x, value: x * value,
    "div": lambda x, value: x / value,
    "softcap": lambda x, value: torch.tanh(x / value) * value,
}
_SUSPECT = ("logit", "softcap", "lm_head", "output_mult", "dim_model_base", "unpadded")


def token_ranks_surprisals(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank (1-based, strictly-greater count) and natural-log surprisal of each target under its logits row.

    logits: [n, vocab] (any float dtype; compared in float32), targets: [n] token ids.
    """
    logits = logits.float()
    target_logit = logits.gather(1, targets.view(-1, 1))
    # Counted in int32 (a vocabulary is far below 2^31): 4x faster on CPU than the default int64 sum of bools.
    ranks = 1 + (logits > target_logit).sum(dim=1, dtype=torch.int32).long()
    surprisals = torch.logsumexp(logits, dim=1) - target_logit.squeeze(1)
    return ranks, surprisals


@dataclass
class ExactHead:
    """logits = steps(hidden @ W.T + b) in float32, W and b as the model holds them (bf16 -> fp32 is exact)."""

    weight: torch.Tensor  # [vocab, hidden] float32 (a bf16 model's head upcast: the same values); bf16 on CUDA
    bias: torch.Tensor | None
    steps: list[tuple[str, float]]  # ("mul" | "div" | "softcap", value), in the model's order
    bf16_valued: bool  # weight and hidden hold bf16 values: oneDNN may multiply them in bf16 losslessly
    chunk: int  # rows per head call
    tensor_cores: bool = False  # CUDA, bf16 values: bf16 x bf16 products, float32 accumulation and output

    @classmethod
    def of(cls, model: torch.nn.Module) -> ExactHead:
        head = model.get_output_embeddings()
        weight = head.weight.detach()
        bias = getattr(head, "bias", None)
        cfg = model.config  # the top-level config: a multimodal wrapper's text settings are not its forward's
        steps = [(op, float(v)) for attr, op in _TRANSFORMS if (v := getattr(cfg, attr, None)) is not None]
        # On CUDA a bf16 model's head stays bf16: tensor cores multiply bf16 exactly and accumulate in float32.
        tensor_cores = weight.device.type == "cuda" and weight.dtype == torch.bfloat16
        return cls(
            weight=weight.contiguous() if tensor_cores else weight.float().contiguous(),
            bias=None if bias is None else bias.detach().float(),
            steps=steps,
            bf16_valued=weight.dtype == torch.bfloat16,
            # CPU: 128 rows measured fastest on the 2-core AMX CPU (49k vocab; 8 rows: 3.7x slower); <= 32 MB of
            # logits. CUDA: 1024 rows, one shape for every call (the last chunk padded).
            chunk=1024 if tensor_cores else max(16, min(128, (32 << 20) // (weight.shape[0] * 4))),
            tensor_cores=tensor_cores,
        )

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.tensor_cores and hidden.dtype == torch.bfloat16:
            x = torch.mm(hidden, self.weight.t(), out_dtype=torch.float32)  # float32 sums of exact bf16 products
            x = x if self.bias is None else x + self.bias
        else:
            x = torch.nn.functional.linear(hidden.float(), self.weight.float(), self.bias)
        for op, value in self.steps:
            x = _OPS[op](x, value)
        return x

    def ranks_surprisals(self, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row rank and surprisal of each target; rows go through in fixed chunks (the same for any batch)."""
        n = hidden.shape[0]
        if self.tensor_cores:  # one GEMM shape for every call: a row's logits never depend on its batch-mates
            pad = -n % self.chunk
            hidden = torch.nn.functional.pad(hidden, (0, 0, 0, pad))
            targets = torch.nn.functional.pad(targets, (0, pad))
        with exact_fp32_matmul(self.bf16_valued and hidden.dtype == torch.bfloat16, hidden.device):
            chunks = zip(hidden.split(self.chunk), targets.split(self.chunk), strict=True)
            ranks, surprisals = zip(*(token_ranks_surprisals(self.logits(h), t) for h, t in chunks), strict=True)
        # One copy to the host per sequence: a copy per chunk would stall a GPU once per chunk.
        return torch.cat(ranks)[:n].cpu(), torch.cat(surprisals)[:n].cpu()

    def check_against(self, model: torch.nn.Module, probe: torch.Tensor) -> None:
        """Refuse a model whose own logits differ from ours: a logit transform this head does not know."""
        with torch.inference_mode():
            own = model(input_ids=probe).logits[0].float()
            with exact_fp32_matmul(self.bf16_valued, probe.device):
                mine = self.logits(model.base_model(input_ids=probe).last_hidden_state[0])
        # Their logits may be rounded to bf16 (2^-9 relative) through up to 4 ops; a missing scale is far larger.
        rel = 2.0**-6 if model.dtype == torch.bfloat16 else 1e-4
        gap = float((own - mine).abs().max())
        if gap > rel * (1.0 + float(own.abs().max())):
            names = sorted(k for k in model.config.to_dict() if any(s in k.lower() for s in _SUSPECT))
            raise UnsupportedStudent(
                f"{type(model).__name__}: its own logits differ from the LM head applied to its final hidden state "
                f"(max |diff| {gap:.3g}); rsr applies only logit_scale, logits_scaling and final_logit_softcapping "
                f"from the top-level config. Unsupported config attribute(s): {', '.join(names) or 'none found'}."
            )


@contextmanager
def exact_fp32_matmul(bf16_valued: bool, device: torch.device) -> Iterator[None]:
    """float32 GEMM precision for the head, whatever the process-wide matmul precision says.

    On CPU, inputs holding bf16 values may take oneDNN's bf16 path: bf16 -> bf16 is lossless, a product of two bf16
    is exact in float32 and AMX accumulates in float32, so this is float32 arithmetic on the same values, at the
    speed of today's bf16 head (1.5x faster than fp32 sgemm here) and row-count invariant (measured).
    """
    backend = torch.backends.mkldnn.matmul if device.type == "cpu" else torch.backends.cuda.matmul
    before = backend.fp32_precision
    backend.fp32_precision = "bf16" if (bf16_valued and device.type == "cpu") else "ieee"
    try:
        yield
    finally:
        backend.fp32_precision = before


# ---------------------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------------------
KINDS = ("reasoning", "answer", "tool")  # what a scored token is, by its first scored character


@dataclass
class Rendered:
    """A conversation as text, with character spans: `spans` are scored (assistant bodies); inside them, `content`
    is the messages' content (the rest of a body is tool-call text) and `reasoning` the thought blocks in it."""

    text: str
    spans: list[tuple[int, int]]
    content: list[tuple[int, int]]
    reasoning: list[tuple[int, int]]

    def kind(self, char: int) -> str:
        return "reasoning" if _inside(char, self.reasoning) else "answer" if _inside(char, self.content) else "tool"


@dataclass
class Prepared:
    """One conversation tokenised: ids (maybe truncated) and the positions of scored (assistant) tokens."""

    index: int
    ids: list[int]
    scored: list[int]  # token positions p >= 1 whose token is scored (predicted from position p - 1)
    truncated: bool
    kinds: list[str] = field(default_factory=list)  # per scored position: reasoning | answer | tool (KINDS)
    rendered: Rendered | None = field(default=None, repr=False)  # kept for a token-level view (Student.explain)
    offsets: list[tuple[int, int]] = field(default_factory=list, repr=False)  # each id's characters in the text

    @property
    def coverage(self) -> tuple[int, int, int]:
        """Scored tokens that are reasoning, answer, tool call (KINDS)."""
        return (self.kinds.count("reasoning"), self.kinds.count("answer"), self.kinds.count("tool"))


@dataclass
class TokenScores:
    """Per scored token, as the scorer computed it: its position in the sequence, its id, its rank (unclipped) and
    surprisal (float32); the trajectory's sums are made from exactly these (TrajectoryStats.from_tokens)."""

    positions: list[int]
    ids: list[int]
    ranks: torch.Tensor
    surprisals: torch.Tensor
    kinds: list[str]


@dataclass
class _Prompt:
    """A prompt's forward: its ids, its last token's final hidden state and the model's cache of keys and values."""

    ids: list[int]
    last_hidden: torch.Tensor  # [1, hidden]
    cache: object  # transformers' Cache after the prompt; copied before a response extends it


@dataclass
class ScoredTrajectory:
    """One conversation's result, and how it was made (the store keys on dtype and max_tokens)."""

    stats: TrajectoryStats | None = None
    error: str | None = None
    dtype: str = "float32"  # the compute dtype of the body
    max_tokens: int | None = None  # the limit asked for, capped at the context (None: the student's context length)
    render: str | None = None  # the student's render mode: "template" | "generation"
    n_reasoning_tokens: int = 0  # scored tokens inside <think>...</think> (tags included)
    n_answer_tokens: int = 0  # the rest of the content
    n_tool_tokens: int = 0  # tool-call text the template renders for an assistant turn
    tokens: TokenScores | None = field(default=None, repr=False)  # per token, when score(keep_tokens=True)
    surprisal_profile: list[float] | None = None  # share of the surprisal in each tenth of the response

    def to_score(self, trajectory_id: str, student_id: str) -> Score:
        made = {"trajectory_id": trajectory_id, "student_id": student_id, "metric_version": METRIC_VERSION}
        made |= {"dtype": self.dtype, "max_tokens": self.max_tokens, "error": self.error, "r_max": R_MAX}
        made |= {"render": self.render, "n_reasoning_tokens": self.n_reasoning_tokens}
        made |= {"n_answer_tokens": self.n_answer_tokens, "n_tool_tokens": self.n_tool_tokens}
        made |= {"surprisal_profile": self.surprisal_profile}
        if (s := self.stats) is not None:
            made |= {"r_max": s.r_max, "sum_rank_unclipped": s.sum_rank_unclipped, **s.as_dict()}
        return Score(**made)


# ---------------------------------------------------------------------------------------------------------------
# The student
# ---------------------------------------------------------------------------------------------------------------
_SENTINEL = "RSR-SENTINEL-7f3a"  # probe text no template rewrites: what follows it is the end-of-turn marker
_OPENERS = (THINK_OPEN + "\n", THINK_OPEN)  # a generation prompt may open the reasoning block itself (R1, QwQ)
# Canonical reasoning chats (join_reasoning form): a template that keeps these verbatim keeps any trace verbatim.
_PROBES = {
    "every assistant turn": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": join_reasoning("R1", "A1")},
    ],
    "earlier assistant turns": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": join_reasoning("R1", "A1")},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": join_reasoning("R2", "A2")},
    ],
}


class _Altered(RecordError):
    """The template rendered an assistant turn's content other than verbatim."""


@dataclass
class Student:
    ref: str
    model: torch.nn.Module
    tokenizer: object
    chat_template: str | None
    digest: str
    device: torch.device
    dtype: torch.dtype
    head: ExactHead = field(repr=False)  # checked against the model's own logits at load
    bos: int | None = field(default=None, repr=False)  # prepended when the tokenizer adds it and the render lacks it
    r_max: int = R_MAX
    # Learnt from the template (again after dataclasses.replace): how chats are rendered and what is scored.
    render_mode: str = field(init=False, default="template")  # "template" | "generation"
    render_note: str = field(init=False, default="")
    eot: str = field(init=False, default="", repr=False)  # the end-of-turn marker after an assistant body

    def __post_init__(self) -> None:
        self.eot = self._end_marker()
        self.render_mode, self.render_note = self._probe()

    @property
    def student_id(self) -> str:
        return f"{self.ref}@{self.digest[:12]}"

    @property
    def context_length(self) -> int:
        cfg = self.model.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(self.tokenizer, "model_max_length", None)
        return int(n) if n and n < 10**7 else 8192

    def max_tokens_for(self, asked: int | None) -> tuple[int, str | None]:
        """The truncation limit to use (asked, capped at the context; None: the context) and a message if capped."""
        n = self.context_length
        if asked is None or asked <= n:
            return asked or n, None
        return n, f"max_tokens {asked} is above {self.ref}'s context of {n}: capped to {n}"

    @classmethod
    def load(
        cls,
        ref: str = "smollm2-135m",
        *,
        dtype: str | torch.dtype = "auto",
        device: str = "auto",
        chat_template: str | None = None,
        state: StateDir | None = None,
    ) -> Student:
        """ref: an embedded name (smollm2-135m, gemma3-270m), a local model folder, or a hub id.

        Raises UnsupportedStudent for an architecture whose logits we cannot reproduce exactly.
        """
        dev = models.auto_device() if device == "auto" else torch.device(device)
        torch_dtype = models.parse_dtype(dtype, dev)
        folder = models.model_folder(ref, state)
        model, tokenizer, bos = models.load_model(folder, torch_dtype, dev)
        template = models.resolve_chat_template(chat_template) or getattr(tokenizer, "chat_template", None)
        head = ExactHead.of(model)
        probe = torch.tensor([[1 if bos is None else bos, *range(2, 10)]], device=dev) % model.config.vocab_size
        head.check_against(model, probe)  # refuse an unsupported student now, not in the middle of a run
        return cls(
            ref=ref,
            model=model,
            tokenizer=tokenizer,
            chat_template=template,
            digest=models.folder_digest(folder, template),
            device=dev,
            dtype=torch_dtype,
            head=head,
            bos=bos,
        )

    def info(self) -> dict:
        return {
            "ref": self.ref,
            "student_id": self.student_id,
            "digest": self.digest,
            "dtype": models.dtype_name(self.dtype),
            "device": str(self.device),
            "vocab_size": int(self.model.config.vocab_size),
            "context_length": self.context_length,
            "metric_version": METRIC_VERSION,
            "r_max": self.r_max,
            "render_mode": self.render_mode,
            "render_note": self.render_note,
        }

    # -- what the template does (learnt once) ----------------------------------------------------------------
    def _end_marker(self) -> str:
        if self.chat_template is None:
            return ""
        try:
            text = self._apply([{"role": "user", "content": "Q"}, {"role": "assistant", "content": _SENTINEL}], False)
        except RecordError:
            return ""
        return text.rsplit(_SENTINEL, 1)[1] if _SENTINEL in text else ""

    def _probe(self) -> tuple[str, str]:
        """Render canonical reasoning chats: "template" mode if every assistant turn stays verbatim."""
        if self.chat_template is None:
            return "template", "no chat template: pass --chat-template to score"
        try:
            which = self._altered_probe()
        except RecordError as err:
            return "template", f"this chat template could not be probed ({err}): scoring assistant turns as rendered"
        if which is None:
            return "template", (
                "this chat template keeps assistant turns verbatim: scoring every assistant turn's body (its content "
                "and tool calls, as an SFT trainer trains on them); role headers, end-of-turn markers and other turns "
                "are context"
            )
        opens = " (its generation prompt opens `<think>`)" if self._generation_prompt().endswith(_OPENERS) else ""
        return "generation", (
            f"this chat template drops or rewrites the `<think>` reasoning of {which}{opens}: scoring "
            "each response as the student generates it (the prompt with the generation prompt + the final response "
            "verbatim; earlier assistant turns are context as the template renders them); train on the published "
            "`prompt`/`completion` columns, not on `messages` through this template"
        )

    def _altered_probe(self) -> str | None:
        """Which canonical chat the template does not keep verbatim, or None."""
        for which, chat in _PROBES.items():
            msgs = [Message.model_validate(m) for m in chat]
            try:
                self._layout_template(msgs, [i for i, m in enumerate(msgs) if m.role == "assistant"], exact=True)
            except _Altered:
                return which
        return None

    def _generation_prompt(self) -> str:
        try:
            return self._apply([{"role": "user", "content": "Q"}], True)
        except RecordError:
            return ""

    # -- rendering -------------------------------------------------------------------------------------------
    def render(self, messages: Sequence[Mapping | object]) -> tuple[str, list[tuple[int, int]]]:
        """The conversation as text under the student's template, and the character spans that are scored.

        Spans are character offsets (not header token ids: BPE can merge a header with the response's first
        characters); the role header and the end-of-turn marker are outside them.
        """
        r = self._layout(messages)
        return r.text, r.spans

    def training_example(self, messages: Sequence[Mapping | object]) -> dict[str, str]:
        """The text split the scorer uses for the final assistant turn: {"prompt", "completion"}, the completion
        being the scored response + the end-of-turn marker. In "generation" mode it is exactly what was scored."""
        r = self._layout(messages)
        start, end = r.spans[-1]
        return {"prompt": r.text[:start], "completion": r.text[start:end] + self.eot}

    def _layout(self, messages: Sequence[Mapping | object]) -> Rendered:
        if self.chat_template is None:
            raise RecordError(
                f"student {self.ref!r} has no chat template: pass --chat-template chatml|llama3|FILE.jinja"
            )
        msgs = [_message(m, i) for i, m in enumerate(messages)]
        turns = [i for i, m in enumerate(msgs) if m.role == "assistant"]
        if not turns:
            raise RecordError("no assistant turn to score")
        if self.render_mode == "generation":
            return self._layout_generation(msgs, turns[-1])
        return self._layout_template(msgs, turns)

    def _layout_template(self, msgs: list[Message], turns: list[int], exact: bool = False) -> Rendered:
        """Every assistant turn's body: what the render of messages[:i+1] adds to messages[:i] + generation prompt."""
        dicts = [m.for_template() for m in msgs]
        text = self._apply(dicts, False)
        spans, content, cursor = [], [], 0
        for i in turns:
            _check_response(msgs[i], i)
            body = self._body(dicts, i, text, cursor)
            if body is None and msgs[i].tool_calls:
                raise RecordError(f"cannot locate the tool-call text of assistant message {i} in the render")
            at = _find(text, msgs[i].content or "", *(body or (cursor, len(text))), exact=exact)
            if at is None:
                raise _Altered(f"the chat template altered assistant message {i}; cannot locate it in the render")
            spans.append(body or at)  # where the prefixes do not line up, the content found is the body
            content.append(at)
            cursor = spans[-1][1]
        return Rendered(text, spans, content, _reasoning_in(text, content))

    def _body(self, dicts: list[dict], i: int, text: str, cursor: int) -> tuple[int, int] | None:
        if i == 0 or not self.eot:
            return None
        prompt = self._apply(dicts[:i], True)
        turn = self._apply(dicts[: i + 1], False)
        if not (text.startswith(turn) and turn.startswith(prompt) and turn.endswith(self.eot)):
            return None
        start, end = len(prompt), len(turn) - len(self.eot)
        content = dicts[i]["content"] or ""
        # A generation prompt that opens `<think>` (QwQ): the turn's body starts at the tag.
        opened = next((o for o in _OPENERS if prompt.endswith(o) and content.startswith(o)), "")
        start -= len(opened)
        return (start, end) if cursor <= start <= end else None

    def _layout_generation(self, msgs: list[Message], last: int) -> Rendered:
        """As the student generates: template(messages[:last]) + generation prompt, the response verbatim, the
        end-of-turn marker. Only the final turn is scored; turns after it are dropped."""
        m = msgs[last]
        _check_response(m, last)
        if m.tool_calls:
            raise RecordError(
                f"assistant message {last} calls tools, but this student's chat template rewrites assistant turns "
                "(render mode 'generation' scores a final text response only); use a template that keeps them"
            )
        prompt = self._apply([x.for_template() for x in msgs[:last]], True)
        content = m.content or ""
        opened = next((o for o in _OPENERS if prompt.endswith(o) and content.startswith(o)), "")
        text = prompt + content[len(opened) :] + self.eot
        body = (len(prompt), len(text) - len(self.eot))
        content_span = [(len(prompt) - len(opened), body[1])]  # the opened tag sits at the end of the prompt
        return Rendered(text, [body], content_span, _reasoning_in(text, content_span))

    def _apply(self, msgs: list[dict], add_generation_prompt: bool) -> str:
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(
                msgs, chat_template=self.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except (TemplateError, TypeError) as err:  # TypeError: a template adding a null content to a string
            # e.g. a template that raise_exception()s on a system turn: this record's error, not the run's crash
            roles = ", ".join(m["role"] for m in msgs[:8]) + (", ..." if len(msgs) > 8 else "")
            raise RecordError(f"the chat template refused this conversation (roles: {roles}): {err}") from None

    def prepare(self, messages: Sequence[Mapping | object], max_tokens: int | None = None, index: int = 0) -> Prepared:
        r = self._layout(messages)
        enc = self.tokenizer(r.text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        if self.bos is not None and (not ids or ids[0] != self.bos):
            ids, offsets = [self.bos, *ids], [(0, 0), *offsets]
        # A token carrying any scored character is scored (it may also carry a merged header character); it is
        # classed by its first scored character.
        firsts = [(p, _first_scored(s, e, r.spans)) for p, (s, e) in enumerate(offsets) if p > 0 and e > s]
        scored = [p for p, c in firsts if c is not None]
        kinds = [r.kind(c) for _, c in firsts if c is not None]
        if not scored:
            raise RecordError("the assistant response has no tokens under this tokenizer")
        limit, _ = self.max_tokens_for(max_tokens)
        truncated = len(ids) > limit
        if truncated:
            ids = ids[:limit]
            scored = [p for p in scored if p < limit]
            if not scored:
                raise RecordError(f"the prompt alone fills the first {limit} tokens; no response token left to score")
        return Prepared(index, ids, scored, truncated, kinds[: len(scored)], r, offsets[: len(ids)])

    # -- the hot path ----------------------------------------------------------------------------------------
    def score(
        self,
        conversations: Sequence[Sequence[Mapping | object]],
        *,
        max_tokens: int | None = None,
        progress: bool = True,
        keep_tokens: bool = False,
    ) -> list[ScoredTrajectory]:
        """Score each conversation's assistant tokens; one result per conversation, in input order (with
        `keep_tokens`, each result's per-token numbers too).

        max_tokens above the student's context is capped to it (max_tokens_for says so, for callers to print)."""
        limit, _ = self.max_tokens_for(max_tokens)
        made = {"dtype": models.dtype_name(self.dtype), "max_tokens": max_tokens and limit, "render": self.render_mode}
        results = [ScoredTrajectory(**made) for _ in conversations]

        def prepare(i: int) -> Prepared | None:
            try:
                return self.prepare(conversations[i], max_tokens=limit, index=i)
            except RecordError as err:
                results[i].error = str(err)
                return None

        bar = tqdm(total=len(conversations), unit="traj", desc=f"scoring ({self.ref})", disable=not progress or None)
        with torch.inference_mode(), bar, ThreadPoolExecutor(1) as producer:
            # On an accelerator, rendering and tokenising (CPU) run ahead in a thread while the forwards run; on a
            # CPU that thread would only take a core from the forward.
            ready = (map if self.device.type == "cpu" else producer.map)(prepare, range(len(conversations)))
            prompt = None
            for p in _by_prompt(ready):
                r = results[p.index]
                tokens, prompt = self._score_one(p, prompt)
                r.stats = TrajectoryStats.from_tokens(tokens.ranks, tokens.surprisals, self.r_max, p.truncated)
                r.n_reasoning_tokens, r.n_answer_tokens, r.n_tool_tokens = p.coverage
                r.surprisal_profile = surprisal_profile(tokens.surprisals)
                r.tokens = tokens if keep_tokens else None
                bar.update()
            bar.update(sum(r.error is not None for r in results))  # those that could not be prepared
        return results

    def explain(
        self, messages: Sequence[Mapping | object], max_tokens: int | None = None
    ) -> tuple[Prepared, ScoredTrajectory]:
        """One conversation through the same exact scorer, keeping what a token-level view needs: the rendered text,
        every token's characters (context included) and each scored token's numbers; the sums are bit for bit
        those of score(). Raises RecordError for a conversation that cannot be scored."""
        limit, _ = self.max_tokens_for(max_tokens)
        p = self.prepare(messages, max_tokens=limit)
        with torch.inference_mode():
            tokens, _ = self._score_one(p)
        made = {"dtype": models.dtype_name(self.dtype), "max_tokens": max_tokens and limit, "render": self.render_mode}
        result = ScoredTrajectory(**made, tokens=tokens)
        result.stats = TrajectoryStats.from_tokens(tokens.ranks, tokens.surprisals, self.r_max, p.truncated)
        result.n_reasoning_tokens, result.n_answer_tokens, result.n_tool_tokens = p.coverage
        result.surprisal_profile = surprisal_profile(tokens.surprisals)
        return p, result

    def _forward(self, ids: list[int], cache: object = None) -> tuple[torch.Tensor, object]:
        """The body over ``ids`` (after ``cache``'s tokens, extending it): final hidden states and the cache."""
        base = self.model.base_model
        name = _cache_argument(type(base))
        out = base(input_ids=torch.tensor([ids], device=self.device), use_cache=True, **{name: cache})
        return out.last_hidden_state[0], getattr(out, name)

    def _prompt(self, ids: list[int]) -> _Prompt:
        hidden, cache = self._forward(ids)
        return _Prompt(ids, hidden[-1:], cache)

    def _score_one(self, p: Prepared, prompt: _Prompt | None = None) -> tuple[TokenScores, _Prompt]:
        """Two forwards, always: the prompt (every token before the first scored one), then the response over the
        prompt's cached keys and values. A prompt computed for another trajectory (``prompt``, when its ids are
        this one's) is the same computation, so a score is the same bits whether its prompt was shared or not.
        One sequence per forward, unpadded: padded batches change the kernels' shapes and so their reductions
        (bf16 hidden states moved by up to 1.75 with batch-mates), and on this CPU batching was no faster."""
        split, last = p.scored[0], p.scored[-1]
        if prompt is None or prompt.ids != p.ids[:split]:
            prompt = self._prompt(p.ids[:split])
        hidden = prompt.last_hidden  # position split - 1 predicts the first scored token
        if last > split:  # positions split .. last - 1, over a copy of the prompt's cache (a forward extends it)
            response, _ = self._forward(p.ids[split:last], copy.deepcopy(prompt.cache))
            hidden = torch.cat([hidden, response])
        # Only positions that predict a scored token reach the LM head: never a [seq, vocab] tensor.
        rows = torch.tensor(p.scored, device=self.device) - split
        token_ids = [p.ids[c] for c in p.scored]
        ranks, surprisals = self.head.ranks_surprisals(hidden[rows], torch.tensor(token_ids, device=self.device))
        return TokenScores(p.scored, token_ids, ranks, surprisals, p.kinds), prompt


def _by_prompt(prepared: Iterable[Prepared | None], window: int = 256) -> Iterator[Prepared]:
    """Windows of prepared conversations, each sorted by prompt: trajectories sharing a prompt (a problem's
    teachers; shards keep them together) come side by side, so the prompt's forward is made once."""
    items = (p for p in prepared if p is not None)
    while batch := list(itertools.islice(items, window)):
        yield from sorted(batch, key=lambda p: (p.ids[: p.scored[0]], p.index))


@functools.cache
def _cache_argument(body: type) -> str:
    # transformers 5 names the key/value cache `cache`; `past_key_values` before (deprecated since).
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def _message(message: Mapping | object, i: int) -> Message:
    """A message as the template must see it (Message.for_template); content may be null only beside tool calls."""
    try:
        msg = message if isinstance(message, Message) else Message.model_validate(_fields(message))
    except (ValidationError, TypeError) as err:
        raise RecordError(f"message {i}: a message needs string role and content ({_first_error(err)})") from None
    if msg.content is None and not (msg.role == "assistant" and msg.tool_calls):
        raise RecordError(f"message {i}: a message needs string role and content (null only beside tool_calls)")
    return msg


def _fields(message: Mapping | object) -> dict:
    return dict(message) if isinstance(message, Mapping) else vars(message)


def _first_error(err: Exception) -> str:
    if isinstance(err, ValidationError):
        e = err.errors()[0]
        return f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
    return str(err)


def _check_response(m: Message, i: int) -> None:
    if not (m.content or "").strip() and not m.tool_calls:
        raise RecordError(f"empty assistant response (message {i})")


def _find(text: str, needle: str, lo: int, hi: int, exact: bool = False) -> tuple[int, int] | None:
    """Where needle (or, unless exact, needle stripped: llama3 trims) first occurs in text[lo:hi]."""
    for n in (needle,) if exact else (needle, needle.strip()):
        if (at := text.find(n, lo, hi)) >= 0:
            return at, at + len(n)
    return None


def _inside(char: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= char < b for a, b in spans)


def _first_scored(s: int, e: int, spans: list[tuple[int, int]]) -> int | None:
    """The first character of token [s, e) inside a scored span, or None."""
    return next((max(s, a) for a, b in spans if s < b and e > a), None)


_THOUGHTS = ((THINK_OPEN, THINK_CLOSE), ("<|begin_of_thought|>", "<|end_of_thought|>"))  # R1/QwQ/Qwen3, OpenThoughts


def reasoning_spans(text: str) -> list[tuple[int, int]]:
    """Spans of reasoning in a response, tags included. A close tag before any open tag: the prompt opened the
    block (R1's generation prompt), reasoning from the start; an unclosed block runs to the end (a cut trace)."""
    spans = []
    for open_, close in _THOUGHTS:
        at, first_close, first_open = 0, text.find(close), text.find(open_)
        if first_close >= 0 and (first_open < 0 or first_close < first_open):
            spans.append((0, at := first_close + len(close)))
        while (a := text.find(open_, at)) >= 0:
            b = text.find(close, a + len(open_))
            spans.append((a, at := len(text) if b < 0 else b + len(close)))
    return sorted(spans)


def _reasoning_in(text: str, content: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(a + x, a + y) for a, b in content for x, y in reasoning_spans(text[a:b])]
