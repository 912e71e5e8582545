"""Random-weight copies of the embedded students (their real configs and tokenizers) in $RSR_MODELS.

    RSR_MODELS=DIR python -m benchmarks.gpu.make_models BUNDLE/models

For a GPU host that cannot take (or fetch) the 500 MB / 1 GB weight files: the cost of scoring does not depend
on the weights, so speed and memory measured on these copies are those of the real students. RSR values are not.
"""

import os
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main() -> None:
    src_root = Path(sys.argv[1])
    dst_root = Path(os.environ["RSR_MODELS"])
    for src in sorted(src_root.iterdir()):
        dst = dst_root / src.name
        if dst.is_dir():
            continue
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(src)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(dst)
        for f in src.iterdir():
            if f.name not in ("config.json",):
                shutil.copy(f, dst / f.name)
        n = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"random-weight {src.name}: {n:.0f}M params -> {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
