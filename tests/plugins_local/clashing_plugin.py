"""A plugin that registers an encoder name a built-in already uses, next to a name of its own."""
from asc_bench import hookimpl


@hookimpl
def register_encoders(register):
    register("logmel-stats", lambda request: None, requires_weights=False)
    register("clash-own-encoder", lambda request: None, requires_weights=False, description="not clashing")
