"""The student: score trajectories (the hot path). Loading a model is rsr/score/load.py; rendering a chat under
the student's template (its own reasoning and tool format, what is scored, token kinds) is rsr/score/render.py.

    student = Student.load("smollm2-135m")
    results = student.score([messages, ...])          # one ScoredTrajectory per conversation, in order
    results[0].stats.rsr

Scored tokens = trained tokens: the tokens scored are exactly those an SFT trainer trains on for this student,
the body of each assistant turn as the student's chat template renders it (content and tool-call text; not the role
header, not the end-of-turn marker). Every other turn is context. A template that rewrites assistant text (drops or
re-renders `<think>` reasoning: R1-Distill, QwQ, Qwen3) is scored as the student generates: the prompt with the
generation prompt, then the final response verbatim (`render_mode` "generation"; see `Student.render_note`).

Exact and reproducible: ranks and surprisals (and, from the same logits, the student's entropy at each scored
position: the companion metrics of rsr.metric) are computed in float32 arithmetic from the final hidden state and the
LM head weights as the model holds them (the body may run in bfloat16, but no logit is ever rounded to bfloat16),
with the model's own logit scaling/softcapping applied in float32. Each trajectory goes through the model alone
(no padding, no batch-mates), so its score depends on the student and the trajectory, never on what else is scored.
"""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from rsr.metric import METRIC_VERSION, R_MAX, TrajectoryStats, surprisal_profile
from rsr.records import RecordError, Score
from rsr.score import load as models
from rsr.score.render import (
    KINDS,
    TEMPLATE_DATE,
    Rendered,
    Renderer,
    reasoning_spans,
    reencodes_json_arguments,
    scored_tokens,
)
from rsr.settings import StateDir
from rsr.spec import StudentSpec, student_digest

__all__ = [
    "KINDS",
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


def token_ranks_surprisals_entropies(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As token_ranks_surprisals (the same bits), plus each row's full-vocabulary entropy in nats, in float32."""
    return ranks_surprisals_entropies_(logits.to(torch.float32, copy=True), targets)


def ranks_surprisals_entropies_(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """token_ranks_surprisals_entropies on float32 logits it may overwrite (the head's own temporary): in place, the
    entropy costs one multiply and one sum over the row more than RSR alone, and no more memory.

    logsumexp is written out as torch computes it (max, exp of the shifted row, sum, log + max), so its
    exponentials serve the entropy too: H = log(s) - sum(e * z) / s with z = logits - max, e = exp(z), s = sum(e),
    every term of the sum <= 0, so nothing cancels for a sure token.
    """
    target_logit = logits.gather(1, targets.view(-1, 1))
    ranks = 1 + (logits > target_logit).sum(dim=1, dtype=torch.int32).long()
    top = logits.amax(dim=1, keepdim=True)
    z = logits.sub_(top)
    e = z.exp()
    s = e.sum(dim=1)
    log_s = s.log()
    surprisals = (log_s + top.squeeze(1)) - target_logit.squeeze(1)
    entropies = log_s - e.mul_(z).sum(dim=1) / s
    return ranks, surprisals, entropies


@dataclass
class ExactHead:
    """logits = steps(hidden @ W.T + b) in float32, W and b as the model holds them (bf16 -> fp32 is exact)."""

    weight: torch.Tensor  # [vocab, hidden] float32 (a bf16 model's head upcast: the same values); bf16 on CUDA
    bias: torch.Tensor | None
    steps: list[tuple[str, float]]  # ("mul" | "div" | "softcap", value), in the model's order
    bf16_valued: bool  # weight and hidden hold bf16 values: oneDNN may multiply them in bf16 losslessly
    chunk: int  # rows per head call
    tensor_cores: bool = False  # CUDA, bf16 values: bf16 x bf16 products, float32 accumulation and output
    entropy: bool = True  # also each row's entropy (off only to measure what it costs: benchmarks/bench_companions)

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

    def ranks_surprisals(
        self, hidden: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Per-row rank and surprisal of each target, and the row's entropy (None when `entropy` is off); rows go
        through in fixed chunks (the same for any batch)."""
        n = hidden.shape[0]
        if self.tensor_cores:  # one GEMM shape for every call: a row's logits never depend on its batch-mates
            pad = -n % self.chunk
            hidden = torch.nn.functional.pad(hidden, (0, 0, 0, pad))
            targets = torch.nn.functional.pad(targets, (0, pad))
        per_chunk = ranks_surprisals_entropies_ if self.entropy else token_ranks_surprisals  # logits: fresh each chunk
        with exact_fp32_matmul(self.bf16_valued and hidden.dtype == torch.bfloat16, hidden.device):
            chunks = zip(hidden.split(self.chunk), targets.split(self.chunk), strict=True)
            parts = list(zip(*(per_chunk(self.logits(h), t) for h, t in chunks), strict=True))
        # One copy to the host per sequence: a copy per chunk would stall a GPU once per chunk.
        ranks, surprisals, *entropies = (torch.cat(part)[:n].cpu() for part in parts)
        return ranks, surprisals, entropies[0] if entropies else None

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
    """Per scored token, as the scorer computed it: its position in the sequence, its id, its rank (unclipped),
    surprisal and the student's entropy there (float32); the trajectory's sums are made from exactly these
    (TrajectoryStats.from_tokens)."""

    positions: list[int]
    ids: list[int]
    ranks: torch.Tensor
    surprisals: torch.Tensor
    kinds: list[str]
    entropies: torch.Tensor | None = None  # the student's full-vocabulary entropy at each position (float32, nats)

    def stats(self, r_max: int, truncated: bool) -> TrajectoryStats:
        return TrajectoryStats.from_tokens(self.ranks, self.surprisals, r_max, truncated, self.entropies)


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
    n_reasoning_tokens: int = 0  # scored tokens of reasoning, in any family's markup (tags included; markup.py)
    n_answer_tokens: int = 0  # the rest of the content
    n_tool_tokens: int = 0  # tool-call text the template renders for an assistant turn
    dropped_tool_calls: int = 0  # tool calls the template renders no text for (none of them scored)
    tokens: TokenScores | None = field(default=None, repr=False)  # per token, when score(keep_tokens=True)
    surprisal_profile: list[float] | None = None  # share of the surprisal in each tenth of the response

    def to_score(self, trajectory_id: str, student_id: str) -> Score:
        made = {"trajectory_id": trajectory_id, "student_id": student_id, "metric_version": METRIC_VERSION}
        made |= {"dtype": self.dtype, "max_tokens": self.max_tokens, "error": self.error, "r_max": R_MAX}
        made |= {"render": self.render, "n_reasoning_tokens": self.n_reasoning_tokens}
        made |= {"n_answer_tokens": self.n_answer_tokens, "n_tool_tokens": self.n_tool_tokens}
        made |= {"surprisal_profile": self.surprisal_profile, "dropped_tool_calls": self.dropped_tool_calls}
        if (s := self.stats) is not None:
            made |= {"r_max": s.r_max, "sum_rank_unclipped": s.sum_rank_unclipped, **s.as_dict()}
        return Score(**made)


# ---------------------------------------------------------------------------------------------------------------
# The student
# ---------------------------------------------------------------------------------------------------------------
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
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)  # the template's options (vLLM's name)
    spec: StudentSpec | None = field(default=None, repr=False)  # how it was named (rsr.spec), when loaded by one
    # Learnt from the template (again after dataclasses.replace): how chats are rendered and what is scored.
    renderer: Renderer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.renderer = Renderer(self.tokenizer, self.chat_template, self.ref, dict(self.chat_template_kwargs))

    @property
    def render_mode(self) -> str:
        """ "template" (every assistant turn as the template renders it) | "generation" (the final response)."""
        return self.renderer.mode

    @property
    def render_note(self) -> str:
        return self.renderer.note

    @property
    def eot(self) -> str:
        """The end-of-turn marker after an assistant body."""
        return self.renderer.eot

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
        chat_template_kwargs: Mapping[str, Any] | None = None,
        state: StateDir | None = None,
    ) -> Student:
        """ref: an embedded name (smollm2-135m, gemma3-270m), a local model folder, or a hub id; chat_template: a
        built-in name (chatml, llama3) or a Jinja file; chat_template_kwargs: the template's options (e.g.
        {"enable_thinking": true}), part of the student's digest. The same as Student.from_spec(StudentSpec(...)).

        Raises UnsupportedStudent for an architecture whose logits we cannot reproduce exactly.
        """
        dtype_name = dtype if isinstance(dtype, str) else models.dtype_name(dtype)
        options = dict(chat_template_kwargs) if chat_template_kwargs else None
        spec = StudentSpec(ref=ref, dtype=dtype_name, device=device, chat_template=chat_template,
                           chat_template_kwargs=options)  # fmt: skip
        return cls.from_spec(spec.resolved(), state=state)

    @classmethod
    def from_spec(cls, spec: StudentSpec, state: StateDir | None = None) -> Student:
        """The student a spec names, loaded (a Registration's spec loads it exactly as it was registered)."""
        dev = models.auto_device() if spec.device == "auto" else torch.device(spec.device)
        torch_dtype = models.parse_dtype(spec.dtype, dev)
        folder = models.model_folder(spec.ref, state, spec.revision)
        model, tokenizer, bos = models.load_model(folder, torch_dtype, dev)
        template = spec.template_source() or getattr(tokenizer, "chat_template", None)
        options = dict(spec.chat_template_kwargs or {})
        head = ExactHead.of(model)
        probe = torch.tensor([[1 if bos is None else bos, *range(2, 10)]], device=dev) % model.config.vocab_size
        head.check_against(model, probe)  # refuse an unsupported student now, not in the middle of a run
        clock = TEMPLATE_DATE.date().isoformat() if "strftime_now" in (template or "") else None
        digest = student_digest(models.weights_manifest(folder), template, options, clock,
                                reencodes_json_arguments(template, options))  # fmt: skip
        student = cls(spec.ref, model, tokenizer, template, digest, dev, torch_dtype, head, bos,
                      chat_template_kwargs=options, spec=spec)  # fmt: skip
        if student.renderer.drops_tool_calls:  # README says tool calls are scored: not under this template
            warnings.warn(f"student {spec.ref!r}: {student.render_note}", UserWarning, stacklevel=2)
        return student

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
            # The student's own form of a chat (rsr/score/render.py): a publisher writes rows in it.
            "reasoning_field": self.renderer.reasoning_field,
            "reasoning_markup": self.renderer.markup.name,
            "native_form": self.renderer.rewrites_records,
            "end_of_turn": self.eot,  # what a trainer trains after each scored turn (the card names it)
        } | ({"chat_template_kwargs": dict(self.chat_template_kwargs)} if self.chat_template_kwargs else {})

    # -- rendering (rsr/score/render.py) ---------------------------------------------------------------------
    def render(
        self, messages: Sequence[Mapping | object], tools: list[dict] | None = None
    ) -> tuple[str, list[tuple[int, int]]]:
        """The conversation as text under the student's template, and the character spans that are scored.

        Spans are character offsets (not header token ids: BPE can merge a header with the response's first
        characters); the role header and the end-of-turn marker are outside them.
        """
        r = self.renderer.layout(messages, tools)
        return r.text, r.spans

    def training_example(self, messages: Sequence[Mapping | object], tools: list[dict] | None = None) -> dict:
        """{"prompt", "completion"} of the final assistant turn, as scored (Renderer.training_example)."""
        return self.renderer.training_example(messages, tools)

    def prepare(
        self,
        messages: Sequence[Mapping | object],
        max_tokens: int | None = None,
        index: int = 0,
        tools: list[dict] | None = None,
    ) -> Prepared:
        r = self.renderer.layout(messages, tools)
        enc = self.tokenizer(r.text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        if self.bos is not None and (not ids or ids[0] != self.bos):
            ids, offsets = [self.bos, *ids], [(0, 0), *offsets]
        scored, kinds = scored_tokens(r, offsets)
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
        tools: Sequence[list[dict] | None] | None = None,
    ) -> list[ScoredTrajectory]:
        """Score each conversation's assistant tokens; one result per conversation, in input order (with
        `keep_tokens`, each result's per-token numbers too). `tools`: each conversation's tool schemas (or None),
        given to the template as apply_chat_template's `tools`.

        max_tokens above the student's context is capped to it (max_tokens_for says so, for callers to print)."""
        if tools is not None and len(tools) != len(conversations):
            raise ValueError(f"tools: {len(tools)} entries for {len(conversations)} conversations (one each, or None)")
        limit, _ = self.max_tokens_for(max_tokens)
        made = {"dtype": models.dtype_name(self.dtype), "max_tokens": max_tokens and limit, "render": self.render_mode}
        results = [ScoredTrajectory(**made) for _ in conversations]

        def prepare(i: int) -> Prepared | None:
            try:
                return self.prepare(conversations[i], max_tokens=limit, index=i, tools=tools[i] if tools else None)
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
                r.stats = tokens.stats(self.r_max, p.truncated)
                r.n_reasoning_tokens, r.n_answer_tokens, r.n_tool_tokens = p.coverage
                r.dropped_tool_calls = p.rendered.dropped_tool_calls
                r.surprisal_profile = surprisal_profile(tokens.surprisals)
                r.tokens = tokens if keep_tokens else None
                bar.update()
            bar.update(sum(r.error is not None for r in results))  # those that could not be prepared
        return results

    def explain(
        self, messages: Sequence[Mapping | object], max_tokens: int | None = None, tools: list[dict] | None = None
    ) -> tuple[Prepared, ScoredTrajectory]:
        """One conversation through the same exact scorer, keeping what a token-level view needs: the rendered text,
        every token's characters (context included) and each scored token's numbers; the sums are bit for bit
        those of score(). Raises RecordError for a conversation that cannot be scored."""
        limit, _ = self.max_tokens_for(max_tokens)
        p = self.prepare(messages, max_tokens=limit, tools=tools)
        with torch.inference_mode():
            tokens, _ = self._score_one(p)
        made = {"dtype": models.dtype_name(self.dtype), "max_tokens": max_tokens and limit, "render": self.render_mode}
        result = ScoredTrajectory(**made, tokens=tokens)
        result.stats = tokens.stats(self.r_max, p.truncated)
        result.n_reasoning_tokens, result.n_answer_tokens, result.n_tool_tokens = p.coverage
        result.dropped_tool_calls = p.rendered.dropped_tool_calls
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
        numbers = self.head.ranks_surprisals(hidden[rows], torch.tensor(token_ids, device=self.device))
        ranks, surprisals, entropies = numbers
        return TokenScores(p.scored, token_ids, ranks, surprisals, p.kinds, entropies), prompt


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
