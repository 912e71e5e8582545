"""The exact head on CUDA (CI has no GPU: the meta device and a dispatch spy stand in): a bf16 student's logits come
from one bf16 x bf16 tensor-core product with float32 accumulation and float32 output, in fixed chunk shapes (the
last chunk padded), so a row's logits never depend on how many rows share the call."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rsr.score.student import ExactHead


class Spy(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((str(func), [(tuple(a.shape), a.dtype) for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


def _head(chunk: int = 8, **kw) -> ExactHead:
    weight = torch.empty(50, 16, dtype=torch.bfloat16, device="meta")
    return ExactHead(weight=weight, bias=None, steps=[("softcap", 30.0)], bf16_valued=True, chunk=chunk, **kw)


def test_a_bf16_student_on_cuda_takes_the_tensor_core_product_with_float32_output() -> None:
    hidden = torch.empty(8, 16, dtype=torch.bfloat16, device="meta")
    with Spy() as spy:
        logits = _head(tensor_cores=True).logits(hidden)
    products = [(f, shapes) for f, shapes in spy.calls if "mm" in f or "linear" in f]
    assert products == [("aten.mm.dtype", [((8, 16), torch.bfloat16), ((16, 50), torch.bfloat16)])]
    assert logits.dtype == torch.float32 and logits.shape == (8, 50)


def test_off_cuda_the_head_stays_an_ieee_float32_product() -> None:
    hidden = torch.empty(8, 16, dtype=torch.bfloat16, device="meta")
    with Spy() as spy:
        _head(tensor_cores=False).logits(hidden)
    dtypes = {dt for f, shapes in spy.calls if "mm" in f for _, dt in shapes}
    assert dtypes == {torch.float32}


def test_every_product_has_the_chunk_shape_whatever_the_row_count(monkeypatch) -> None:
    head = ExactHead(
        weight=torch.randn(50, 16).bfloat16(), bias=None, steps=[], bf16_valued=True, chunk=8, tensor_cores=True
    )
    shapes = []

    def cpu_logits(hidden: torch.Tensor) -> torch.Tensor:  # CPU has no aten.mm.dtype kernel: float32 stands in
        shapes.append(tuple(hidden.shape))
        return hidden.float() @ head.weight.float().t()

    monkeypatch.setattr(head, "logits", cpu_logits)
    hidden, targets = torch.randn(19, 16).bfloat16(), torch.randint(0, 50, (19,))
    ranks, surprisals, entropies = head.ranks_surprisals(hidden, targets)
    assert shapes == [(8, 16)] * 3 and ranks.shape == surprisals.shape == entropies.shape == (19,)
    alone = [head.ranks_surprisals(hidden[i : i + 1], targets[i : i + 1]) for i in range(19)]
    for got, one in zip((ranks, surprisals, entropies), zip(*alone, strict=True), strict=True):
        assert torch.equal(got, torch.cat(one))  # entropy too: a row's numbers never depend on its batch-mates
