"""The student: render chats and score trajectories (the hot path). Loading a model is rsr/models.py.

    student = Student.load("smollm2-135m")
    results = student.score([messages, ...])          # one ScoredTrajectory per conversation, in order
    results[0].stats.rsr

Only assistant turns are scored; the prompt is rendered with the student's chat template and is context only.

Exact and reproducible: ranks and surprisals are computed in float32 arithmetic from the final hidden state and the
LM head weights as the model holds them (the body may run in bfloat16, but no logit is ever rounded to bfloat16),
with the model's own logit scaling/softcapping applied in float32. Each trajectory goes through the model alone
(no padding, no batch-mates), so its score depends on the student and the trajectory, never on what else is scored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from rsr import models
from rsr.config import StateDir
from rsr.metric import METRIC_VERSION, R_MAX, TrajectoryStats, token_ranks_surprisals
from rsr.records import RecordError, Score

__all__ = ["ExactHead", "Prepared", "RecordError", "ScoredTrajectory", "Student", "UnsupportedStudent"]


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


@dataclass
class ExactHead:
    """logits = steps(hidden @ W.T + b) in float32, W and b as the model holds them (bf16 -> fp32 is exact)."""

    weight: torch.Tensor  # [vocab, hidden] float32, made once (a bf16 model's head upcast: the same values)
    bias: torch.Tensor | None
    steps: list[tuple[str, float]]  # ("mul" | "div" | "softcap", value), in the model's order
    bf16_valued: bool  # weight and hidden hold bf16 values: oneDNN may multiply them in bf16 losslessly
    chunk: int  # rows per head call

    @classmethod
    def of(cls, model: torch.nn.Module) -> ExactHead:
        head = model.get_output_embeddings()
        weight = head.weight.detach()
        bias = getattr(head, "bias", None)
        cfg = model.config  # the top-level config: a multimodal wrapper's text settings are not its forward's
        steps = [(op, float(v)) for attr, op in _TRANSFORMS if (v := getattr(cfg, attr, None)) is not None]
        return cls(
            weight=weight.float().contiguous(),
            bias=None if bias is None else bias.detach().float(),
            steps=steps,
            bf16_valued=weight.dtype == torch.bfloat16,
            # 128 rows measured fastest on the 2-core AMX CPU (49k vocab; 8 rows: 3.7x slower); <= 32 MB of logits.
            chunk=max(16, min(128, (32 << 20) // (weight.shape[0] * 4))),
        )

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.linear(hidden.float(), self.weight, self.bias)
        for op, value in self.steps:
            x = _OPS[op](x, value)
        return x

    def ranks_surprisals(self, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row rank and surprisal of each target; rows go through in fixed chunks (the same for any batch)."""
        with exact_fp32_matmul(self.bf16_valued and hidden.dtype == torch.bfloat16, hidden.device):
            chunks = zip(hidden.split(self.chunk), targets.split(self.chunk), strict=True)
            ranks, surprisals = zip(*(token_ranks_surprisals(self.logits(h), t) for h, t in chunks), strict=True)
        # One copy to the host per sequence: a copy per chunk would stall a GPU once per chunk.
        return torch.cat(ranks).cpu(), torch.cat(surprisals).cpu()

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


@dataclass
class ScoredTrajectory:
    """One conversation's result, and how it was made (the store keys on dtype and max_tokens)."""

    stats: TrajectoryStats | None = None
    error: str | None = None
    dtype: str = "float32"  # the compute dtype of the body
    max_tokens: int | None = None  # the limit asked for (None: the student's context length)

    def to_score(self, trajectory_id: str, student_id: str) -> Score:
        made = {"trajectory_id": trajectory_id, "student_id": student_id, "metric_version": METRIC_VERSION}
        made |= {"dtype": self.dtype, "max_tokens": self.max_tokens, "error": self.error, "r_max": R_MAX}
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

    @property
    def student_id(self) -> str:
        return f"{self.ref}@{self.digest[:12]}"

    @property
    def context_length(self) -> int:
        cfg = self.model.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(self.tokenizer, "model_max_length", None)
        return int(n) if n and n < 10**7 else 8192

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
        }

    # -- rendering -------------------------------------------------------------------------------------------
    def render(self, messages: Sequence[Mapping | object]) -> tuple[str, list[tuple[int, int]]]:
        """The conversation as text under the student's template, and the character spans of assistant content.

        Spans are found by character offsets (not header token ids: BPE can merge a header with the response's
        first characters); the end-of-turn marker is outside the span.
        """
        if self.chat_template is None:
            raise RecordError(
                f"student {self.ref!r} has no chat template: pass --chat-template chatml|llama3|FILE.jinja"
            )
        msgs = [_as_dict(m) for m in messages]
        if not any(m["role"] == "assistant" for m in msgs):
            raise RecordError("no assistant turn to score")
        text = self._apply(msgs, add_generation_prompt=False)
        spans: list[tuple[int, int]] = []
        cursor = 0
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            content = m["content"]
            if not content.strip():
                raise RecordError(f"empty assistant response (message {i})")
            prefix = self._apply(msgs[:i], add_generation_prompt=True) if i else ""
            start = len(prefix) if text.startswith(prefix) and len(prefix) >= cursor else cursor
            for needle in (content, content.strip()):
                at = text.find(needle, start)
                if at >= 0:
                    spans.append((at, at + len(needle)))
                    cursor = at + len(needle)
                    break
            else:
                raise RecordError(f"the chat template altered assistant message {i}; cannot locate it in the render")
        return text, spans

    def _apply(self, msgs: list[dict], add_generation_prompt: bool) -> str:
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(
                msgs, chat_template=self.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except TemplateError as err:
            # e.g. a template that raise_exception()s on a system turn: this record's error, not the run's crash
            roles = ", ".join(m["role"] for m in msgs[:8]) + (", ..." if len(msgs) > 8 else "")
            raise RecordError(f"the chat template refused this conversation (roles: {roles}): {err}") from None

    def prepare(self, messages: Sequence[Mapping | object], max_tokens: int | None = None, index: int = 0) -> Prepared:
        text, spans = self.render(messages)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        if self.bos is not None and (not ids or ids[0] != self.bos):
            ids, offsets = [self.bos, *ids], [(0, 0), *offsets]
        # A token carrying any assistant character is scored (it may also carry a merged header character).
        scored = [p for p, (s, e) in enumerate(offsets) if p > 0 and e > s and any(s < b and e > a for a, b in spans)]
        if not scored:
            raise RecordError("the assistant response has no tokens under this tokenizer")
        limit = max_tokens or self.context_length
        truncated = len(ids) > limit
        if truncated:
            ids = ids[:limit]
            scored = [p for p in scored if p < limit]
            if not scored:
                raise RecordError(f"the prompt alone fills the first {limit} tokens; no response token left to score")
        return Prepared(index=index, ids=ids, scored=scored, truncated=truncated)

    # -- the hot path ----------------------------------------------------------------------------------------
    def score(
        self,
        conversations: Sequence[Sequence[Mapping | object]],
        *,
        max_tokens: int | None = None,
        progress: bool = True,
    ) -> list[ScoredTrajectory]:
        """Score each conversation's assistant tokens; one result per conversation, in input order."""
        made = {"dtype": models.dtype_name(self.dtype), "max_tokens": max_tokens}
        results = [ScoredTrajectory(**made) for _ in conversations]
        prepared: list[Prepared] = []
        for i, msgs in enumerate(conversations):
            try:
                prepared.append(self.prepare(msgs, max_tokens=max_tokens, index=i))
            except RecordError as err:
                results[i].error = str(err)
        total = sum(len(p.scored) for p in prepared)
        with (
            torch.inference_mode(),
            tqdm(total=total, unit="tok", desc=f"scoring ({self.ref})", disable=not progress or None) as bar,
        ):
            for p in prepared:
                results[p.index].stats = self._score_one(p)
                bar.update(len(p.scored))
        return results

    def _score_one(self, p: Prepared) -> TrajectoryStats:
        # One sequence per forward, unpadded: padded batches change the kernels' shapes and so their reductions
        # (bf16 hidden states moved by up to 1.75 with batch-mates), and on this CPU batching was no faster
        # (1.07-1.33x slower than one at a time, measured in bf16 and fp32).
        ids = torch.tensor([p.ids], device=self.device)
        hidden = self.model.base_model(input_ids=ids).last_hidden_state[0]
        # Only positions that predict a scored token reach the LM head: never a [seq, vocab] tensor.
        cols = torch.tensor(p.scored, device=self.device)
        ranks, surprisals = self.head.ranks_surprisals(hidden[cols - 1], ids[0, cols])
        return TrajectoryStats.from_tokens(ranks, surprisals, self.r_max, p.truncated)


def _as_dict(message: Mapping | object) -> dict:
    get = message.get if isinstance(message, Mapping) else lambda key: getattr(message, key, None)
    role, content = get("role"), get("content")
    if not isinstance(role, str) or not isinstance(content, str):
        raise RecordError(
            f"a message needs string role and content, got role={role!r} content={type(content).__name__}"
        )
    return {"role": role, "content": content}
