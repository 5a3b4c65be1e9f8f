"""The extension points of asc-bench.

A plugin is a module (or object) with functions decorated by ``asc_bench.hookimpl`` whose names are
the hooks below. Every hook receives a ``register`` callable and returns nothing; the core collects
what is registered, records which plugin registered it, and reports a clash of names as an error that
names both plugins. Hooks are called once, when the plugin manager is first built.
"""
from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("asc_bench")


@hookspec
def register_encoders(register: Callable[..., None]) -> None:
    """Register audio encoders.

    Called once at start-up. Call ``register(name, build, *, description="", requires_weights=True,
    summary=None)`` once per encoder, where ``build(request: EncoderRequest)`` returns a
    ``torch.nn.Module`` with ``sample_rate``, ``embed_dim``, ``config()`` and
    ``forward(wave[B, T], lengths[B]) -> [B, D]``. With ``requires_weights=True`` the core refuses to
    build the encoder unless the user gave ``--checkpoint`` or ``--random-init``. ``summary()`` returns
    cheap facts shown by ``asc-bench list encoders`` (e.g. ``{"params": 126952, "macs_per_s": ...}``).
    """


@hookspec
def register_datasets(register: Callable[..., None]) -> None:
    """Register dataset adapters.

    Called once at start-up. Call ``register(name, build, *, description="")``, where
    ``build(request: DatasetRequest)`` returns a list of ``Clip`` (absolute path, label string,
    split/fold name, extras). It must not read audio; raise ``LayoutError`` naming the expected file
    when the layout is wrong.
    """


@hookspec
def register_protocols(register: Callable[..., None]) -> None:
    """Register evaluation protocols.

    Called once at start-up. Call ``register(name, run, *, description="")``, where
    ``run(data: EvalData, params: dict, seed: int)`` returns a ``ProtocolResult``. Sampling must
    depend only on ``params``, ``seed`` and the clip order/labels, never on the embeddings.
    Few-shot protocols return ``outcome`` (per-episode members and correctness: the record's
    class- and group-level intervals), fold protocols ``fold_sizes`` (the corrected t-test).
    """


@hookspec
def register_losses(register: Callable[..., None]) -> None:
    """Register training losses.

    Called once at start-up. Call ``register(name, build, *, description="")``, where
    ``build(**options)`` returns a ``torch.nn.Module`` computing the loss.
    """


@hookspec
def register_augmentations(register: Callable[..., None]) -> None:
    """Register batch augmentations (mixing) used by training recipes.

    Called once at start-up. Call ``register(name, build, *, description="")``, where
    ``build(**options)`` returns a callable ``(x, y, generator) -> (x_mixed, y_virtual)``.
    """


@hookspec
def register_recipes(register: Callable[..., None]) -> None:
    """Register training recipes for ``asc-bench train``.

    Called once at start-up. Call ``register(name, recipe, *, description="")`` with an object that
    follows ``asc_bench.training.loop.Recipe``.
    """


@hookspec
def register_task_dirs(register: Callable[..., None]) -> None:
    """Contribute directories of task YAML files.

    Called once at start-up. Call ``register(path)`` with a directory; every ``*.yaml`` in it is a
    task whose name is the file's ``name`` field. A task name defined twice is an error.
    """


@hookspec
def register_suite_dirs(register: Callable[..., None]) -> None:
    """Contribute directories of benchmark-suite YAML files (``asc-bench bench``, ``list suites``).

    Called once at start-up. Call ``register(path)`` with a directory; every ``*.yaml`` in it is a
    suite whose name is the file's ``name`` field (format: ``asc_bench.evaluation.suites``). A suite
    name defined twice is an error naming both files.
    """
