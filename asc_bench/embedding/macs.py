"""Count multiply-accumulate operations (MACs) of one forward pass, from tensor shapes only.

Shapes are all that is read, so a model built under ``torch.device("meta")`` and fed a meta tensor is
counted without allocating weights or computing anything: encoders can report MACs cheaply.

What is counted (one MAC = one multiply plus one add):
- ``Conv1d/2d/3d``: output elements x (input channels / groups) x kernel volume;
- ``Linear`` (and subclasses): input rows x in_features x out_features;
- ``nn.MultiheadAttention``: the q/k/v and output projections plus Q·Kᵀ and A·V (its own forward calls
  the projections functionally, so they are counted here and its ``out_proj`` never fires a hook);
- outside those modules, calls of ``F.scaled_dot_product_attention`` and matrix products
  (``matmul``/``@``, ``bmm``, ``baddbmm``, ``einsum`` of two operands, ``F.linear``), which is how
  hand-written attention blocks (BEATs, timm ViTs) compute Q·Kᵀ and A·V.
Normalisation, activations, pooling and element-wise arithmetic are not counted, as is usual for
published MAC figures (e.g. the DCASE complexity rules).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class MacReport:
    """MACs per category; `total` is what `count_macs` returns."""

    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, macs: int) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + int(macs)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


def _conv_macs(module: nn.Module, out: torch.Tensor) -> int:
    kernel = math.prod(module.kernel_size)
    return out.numel() * (module.in_channels // module.groups) * kernel


def _linear_macs(inp: torch.Tensor, in_features: int, out_features: int) -> int:
    rows = inp.numel() // in_features
    return rows * in_features * out_features


def _mha_macs(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> int:
    query = kwargs.get("query", args[0] if len(args) > 0 else None)
    key = kwargs.get("key", args[1] if len(args) > 1 else query)
    value = kwargs.get("value", args[2] if len(args) > 2 else key)
    e = module.embed_dim
    # (L, N, E) or (N, L, E) or unbatched (L, E): only the token counts matter.
    n_q = query.numel() // query.shape[-1]
    n_k = key.numel() // key.shape[-1]
    n_v = value.numel() // value.shape[-1]
    proj = n_q * query.shape[-1] * e + n_k * key.shape[-1] * e + n_v * value.shape[-1] * e
    seq_k = key.shape[0] if (key.dim() == 2 or not module.batch_first) else key.shape[1]
    attn = 2 * n_q * seq_k * e          # Q·Kᵀ and A·V over all heads
    return proj + attn + n_q * e * e    # + output projection


def _matmul_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    if a.dim() == 1 and b.dim() == 1:
        return a.numel()
    if a.dim() == 1 or b.dim() == 1:
        # matrix-vector product: every element of the (batched) matrix is used once.
        return b.numel() if a.dim() == 1 else a.numel()
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return math.prod(batch) * a.shape[-2] * a.shape[-1] * b.shape[-1]


class _FunctionCounter(TorchFunctionMode):
    """Counts matrix products and fused attention that happen outside hooked modules."""

    def __init__(self, report: MacReport, depth: list[int]):
        super().__init__()
        self.report = report
        self.depth = depth

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None):
        kwargs = kwargs or {}
        if self.depth[0] == 0:
            self._count(func, args, kwargs)
        return func(*args, **kwargs)

    def _count(self, func: Callable, args: tuple, kwargs: dict) -> None:
        if func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            # (..., L, E) x (..., S, E) -> (..., L, S) then (..., L, S) x (..., S, Ev)
            v = args[2]
            lead = math.prod(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]))
            self.report.add("attention", lead * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1]))
        elif func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm):
            self.report.add("matmul", _matmul_macs(args[0], args[1]))
        elif func in (torch.Tensor.__rmatmul__,):
            self.report.add("matmul", _matmul_macs(args[1], args[0]))
        elif func in (torch.baddbmm, torch.Tensor.baddbmm, torch.addmm, torch.Tensor.addmm):
            self.report.add("matmul", _matmul_macs(args[1], args[2]))
        elif func is F.linear:
            w = args[1] if len(args) > 1 else kwargs["weight"]
            self.report.add("linear", _linear_macs(args[0], w.shape[-1], w.shape[0] if w.dim() > 1 else 1))
        elif func is torch.einsum:
            operands = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
            if len(operands) == 2:
                self.report.add("matmul", _einsum_macs(args[0], operands[0], operands[1]))


def _einsum_macs(equation: str, a: torch.Tensor, b: torch.Tensor) -> int:
    """Product of the sizes of every index letter appearing in either operand (one MAC per term)."""
    lhs = equation.replace(" ", "").split("->")[0]
    sa, sb = lhs.split(",")
    if "." in sa or "." in sb:
        # Ellipses: fall back to the larger operand times the contracted size (a safe estimate).
        return max(a.numel(), b.numel())
    sizes = dict(zip(sa, a.shape)) | dict(zip(sb, b.shape))
    return math.prod(sizes.values())


def count_macs_report(model: nn.Module, example_input: Any, **forward_kwargs: Any) -> MacReport:
    """Run `model(example_input)` (a tensor or a tuple of positional inputs) and count its MACs."""
    report = MacReport()
    depth = [0]
    handles = []

    def enter(_module: nn.Module, *_args: Any) -> None:
        depth[0] += 1

    def leave_conv(module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        depth[0] -= 1
        if depth[0] == 0:
            report.add("conv", _conv_macs(module, out))

    def leave_linear(module: nn.Module, inp: tuple, _out: torch.Tensor) -> None:
        depth[0] -= 1
        if depth[0] == 0:
            report.add("linear", _linear_macs(inp[0], module.in_features, module.out_features))

    def leave_mha(module: nn.MultiheadAttention, args: tuple, kwargs: dict, _out: Any) -> None:
        depth[0] -= 1
        if depth[0] == 0:
            report.add("attention", _mha_macs(module, args, kwargs))

    for module in model.modules():
        if isinstance(module, _CONV):
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave_conv)]
        elif isinstance(module, nn.Linear):
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave_linear)]
        elif isinstance(module, nn.MultiheadAttention):
            handles += [module.register_forward_pre_hook(enter),
                        module.register_forward_hook(leave_mha, with_kwargs=True)]
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        with torch.no_grad(), _FunctionCounter(report, depth):
            model(*inputs, **forward_kwargs)
    finally:
        for h in handles:
            h.remove()
    return report


def count_macs(model: nn.Module, example_input: Any, **forward_kwargs: Any) -> int:
    """Total MACs of `model(example_input)` for the batch given (divide by the batch size yourself).

    Works on meta tensors: build the model under ``torch.device("meta")`` and pass
    ``torch.empty(shape, device="meta")``.
    """
    return count_macs_report(model, example_input, **forward_kwargs).total
