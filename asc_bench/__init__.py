"""asc-bench: how well do audio representations transfer?"""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Decorate a plugin's hook functions with this (see asc_bench.hookspecs for the hooks).
hookimpl = pluggy.HookimplMarker("asc_bench")

__all__ = ["hookimpl", "__version__"]
