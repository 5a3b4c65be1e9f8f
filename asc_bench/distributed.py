"""torchrun awareness for training and embedding extraction.

API (everything is a no-op or the identity in a single process, so callers never branch on it):

- ``init(device=None) -> DistInfo``: read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by torchrun) and,
  when ``WORLD_SIZE > 1``, initialise the default process group once (``gloo`` on CPU, ``nccl`` on
  CUDA). ``MASTER_ADDR``/``MASTER_PORT`` come from torchrun as well. Idempotent.
- ``info()``: the current ``DistInfo`` (rank, world_size, local_rank, backend, device); before ``init``
  it describes the environment without touching the process group.
- ``is_distributed()``, ``rank()``, ``world_size()``, ``is_main()`` (rank 0), ``barrier()``.
- ``shard_indices(n, rank, world) -> range``: the contiguous block of ``range(n)`` that a rank
  handles during embedding extraction; blocks differ in size by at most one and concatenating the
  blocks of ranks 0..world-1 gives ``range(n)`` in order.
- ``all_gather(t) -> list[Tensor]``: every rank's tensor (first dimension may differ between ranks).
- ``all_gather_cat(t) -> Tensor``: those tensors concatenated in rank order along dim 0.
- ``all_gather_grad(t) -> Tensor``: like ``all_gather_cat`` but differentiable (same row count on all
  ranks); for losses that couple the whole global batch (SupCon).
- ``all_reduce_mean(t)``, ``broadcast_object(obj, src=0)``.
- ``gather_rows(local, n)``: reassemble the per-rank ``shard_indices`` blocks of an (n_local, D)
  array into the (n, D) matrix on every rank.
- ``global_batch_slice(global_batch, rank, world) -> slice``: the part of a global batch that a rank
  trains on; the training loop uses it instead of ``DistributedSampler`` so that the global data
  order depends on (seed, step) only, whatever the number of ranks.
- ``distributed_sampler(dataset, *, shuffle, seed)``: a ``torch.utils.data.DistributedSampler`` for
  code that iterates over a dataset per epoch (None in a single process).

Importing this module imports neither torch nor numpy (the CLI imports it for every command, including
``--version``): torch is imported inside the functions that need it, and a process group can only exist
once ``torch.distributed`` has been imported, so the single-process answers (``rank() == 0``,
``is_main()``...) are given without importing it.

Typical extraction pattern (what the embedding cache does)::

    dist = init()
    rows = shard_indices(len(clips), dist.rank, dist.world_size)
    local = embed(clips[rows.start:rows.stop])                # (len(rows), D)
    full = gather_rows(local, len(clips))                     # every rank holds (N, D)
    if is_main():
        commit_to_cache(full)
    barrier()
"""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str | None      # None in a single process
    device: str               # "cpu" or "cuda:<local_rank>"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_info() -> DistInfo:
    """What torchrun's environment says, without initialising anything."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    return DistInfo(rank=rank, world_size=world, local_rank=local, backend=None, device="cpu")


def _tdist() -> ModuleType:
    import torch.distributed as tdist

    return tdist


def _initialized() -> bool:
    """Whether a process group exists; never imports torch (no import, no process group)."""
    tdist = sys.modules.get("torch.distributed")
    return tdist is not None and tdist.is_available() and tdist.is_initialized()


def init(device: str | None = None) -> DistInfo:
    """Join torchrun's process group when ``WORLD_SIZE > 1`` (idempotent).

    ``device``: "cpu" forces gloo; "cuda" forces nccl; None picks nccl when CUDA is available and
    otherwise gloo. Each CUDA rank uses ``cuda:LOCAL_RANK``. Nothing is cached here: the process group
    torch keeps is the only state, and ``info()`` reads it back.
    """
    env = env_info()
    use_cuda = (device or "").startswith("cuda") or (device is None and _cuda_available())
    if env.world_size <= 1:
        return DistInfo(0, 1, 0, None, "cuda" if use_cuda else "cpu")
    import torch

    tdist = _tdist()
    if use_cuda:
        torch.cuda.set_device(env.local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=env.rank,
                                 world_size=env.world_size)
    return info()


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def shutdown() -> None:
    """Leave the process group (call once at the end of a torchrun entry point)."""
    if _initialized():
        _tdist().destroy_process_group()


def info() -> DistInfo:
    """The process group as torch holds it (or the environment's view before ``init``)."""
    env = env_info()
    if not _initialized():
        return env
    tdist = _tdist()
    backend = str(tdist.get_backend())
    device = f"cuda:{env.local_rank}" if backend == "nccl" else "cpu"
    return DistInfo(tdist.get_rank(), tdist.get_world_size(), env.local_rank, backend, device)


def is_distributed() -> bool:
    return _initialized() and _tdist().get_world_size() > 1


def rank() -> int:
    return _tdist().get_rank() if is_distributed() else 0


def world_size() -> int:
    return _tdist().get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        _tdist().barrier()


def _comm_device() -> torch.device:
    import torch

    # nccl only moves CUDA tensors; gloo only CPU ones.
    return torch.device(info().device) if info().backend == "nccl" else torch.device("cpu")


# ------------------------------------------------------------------------------------------ sharding
def shard_indices(n: int, rank: int, world: int) -> range:
    """Contiguous block of ``range(n)`` for ``rank`` out of ``world`` (sizes differ by at most one)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def global_batch_slice(global_batch: int, rank: int, world: int) -> slice:
    """The rows of a global batch that ``rank`` trains on; the global batch must split evenly so that
    the mean of per-rank mean losses (what DDP's gradient averaging computes) is the global mean."""
    if global_batch % world:
        raise ValueError(f"batch_size {global_batch} is not divisible by the {world} ranks; choose a "
                         f"multiple of the world size")
    per = global_batch // world
    return slice(rank * per, (rank + 1) * per)


def distributed_sampler(dataset: Any, *, shuffle: bool = True, seed: int = 0,
                        drop_last: bool = False) -> Any:
    """A ``DistributedSampler`` over ``dataset`` when running under torchrun, else None."""
    if not is_distributed():
        return None
    from torch.utils.data import DistributedSampler

    return DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=shuffle,
                              seed=seed, drop_last=drop_last)


# ------------------------------------------------------------------------------------------ collectives
def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``t`` (same trailing shape; the first dimension may differ), in rank order."""
    if not is_distributed():
        return [t]
    import torch

    tdist = _tdist()
    dev = _comm_device()
    x = t.detach().to(dev).contiguous()
    sizes = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(world_size())]
    tdist.all_gather(sizes, torch.tensor([x.shape[0]], dtype=torch.int64, device=dev))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=dev)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    tdist.all_gather(parts, padded)
    return [p[: int(s.item())].to(t.device) for p, s in zip(parts, sizes)]


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return t
    import torch

    return torch.cat(all_gather(t), dim=0)


def all_gather_grad(t: torch.Tensor) -> torch.Tensor:
    """Differentiable all-gather (equal shapes on all ranks), concatenated along dim 0.

    If every rank computes the same global loss from the gathered tensor, the backward pass sums the
    gradients of all ranks into the owner (world x dL/dt); DDP's averaging then divides by world,
    so parameter gradients equal the single-process gradient of that loss.
    """
    if not is_distributed():
        return t
    return _gather_with_grad().apply(t)


@functools.cache
def _gather_with_grad() -> type:
    """The autograd function, defined on first use so that importing this module needs no torch."""
    import torch

    tdist = _tdist()

    class _GatherWithGrad(torch.autograd.Function):
        """Forward: concatenate all ranks' rows. Backward: sum the gradients every rank computed for the
        gathered tensor (all-reduce) and keep the owner's rows (a reduce-scatter built from gloo-safe ops)."""

        @staticmethod
        def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            ctx.rows = t.shape[0]
            parts = [torch.empty_like(t) for _ in range(world_size())]
            tdist.all_gather(parts, t.contiguous())
            return torch.cat(parts, dim=0)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            grad = grad.contiguous().clone()
            tdist.all_reduce(grad, op=tdist.ReduceOp.SUM)
            start = rank() * ctx.rows
            return grad[start:start + ctx.rows]

    return _GatherWithGrad


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return t
    tdist = _tdist()
    x = t.detach().to(_comm_device()).clone()
    tdist.all_reduce(x, op=tdist.ReduceOp.SUM)
    return (x / world_size()).to(t.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (any picklable object we created ourselves)."""
    if not is_distributed():
        return obj
    box = [obj]
    _tdist().broadcast_object_list(box, src=src)
    return box[0]


def gather_rows(local: np.ndarray | torch.Tensor, n: int) -> np.ndarray:
    """Reassemble per-rank ``shard_indices`` blocks into the full (n, ...) array on every rank."""
    import numpy as np

    if not is_distributed() and isinstance(local, np.ndarray):
        full_np = np.ascontiguousarray(local)        # the single-process answer, without torch
        if full_np.shape[0] != n:
            raise RuntimeError(f"gathered {full_np.shape[0]} rows, expected {n}: did every rank embed the "
                               f"block shard_indices(n, rank, world) gave it?")
        return full_np
    import torch

    t = torch.as_tensor(np.ascontiguousarray(local)) if isinstance(local, np.ndarray) else local
    full = all_gather_cat(t)
    if full.shape[0] != n:
        raise RuntimeError(f"gathered {full.shape[0]} rows, expected {n}: did every rank embed the "
                           f"block shard_indices(n, rank, world) gave it?")
    return full.cpu().numpy()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or the module itself)."""
    import torch

    return model.module if hasattr(model, "module") and isinstance(
        model, torch.nn.parallel.DistributedDataParallel) else model


def wrap_ddp(model: torch.nn.Module, *, find_unused: bool = True) -> torch.nn.Module:
    """Wrap for DDP when distributed; frozen stages leave parameters unused, hence ``find_unused``."""
    if not is_distributed():
        return model
    kwargs: dict[str, Any] = {"find_unused_parameters": find_unused}
    if info().backend == "nccl":
        kwargs["device_ids"] = [info().local_rank]
    import torch

    return torch.nn.parallel.DistributedDataParallel(model, **kwargs)


__all__: Sequence[str] = (
    "DistInfo", "env_info", "init", "shutdown", "info", "is_distributed", "rank", "world_size",
    "is_main", "barrier", "shard_indices", "global_batch_slice", "distributed_sampler", "all_gather",
    "all_gather_cat", "all_gather_grad", "all_reduce_mean", "broadcast_object", "gather_rows",
    "unwrap", "wrap_ddp",
)
