"""The `asc-bench` group, its error handling and the helpers every command shares.

Every command is wrapped in `guard`: an `UsageError` prints one line and exits 2, any other
asc-bench error exits 1, and an unexpected exception prints its type and message (the traceback
only with `--debug`). Command modules import nothing heavy at module level, so `--version`,
`--help` and the listings start without torch.
"""
from __future__ import annotations

import functools
import json
import sys
import traceback
from typing import Any, Callable, Iterable

import click
from rich.console import Console

from asc_bench.api import AscBenchError, UsageError
from asc_bench.plugins import get_manager

# Logs and pipes get wide tables instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class Context:
    def __init__(self, plugins: tuple[str, ...], debug: bool):
        self.plugins = plugins
        self.debug = debug


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn asc-bench errors into a one-line message and the documented exit code."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_object(Context).debug
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            if debug:
                traceback.print_exc()
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except AscBenchError as exc:
            if debug:
                traceback.print_exc()
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except (click.ClickException, click.exceptions.Exit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if debug:
                traceback.print_exc()
            err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                      highlight=False, soft_wrap=True)
            sys.exit(1)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Load a local plugin module (repeatable); also via ASC_BENCH_PLUGINS.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="asc-bench")
@click.pass_context
def cli(ctx: click.Context, plugins: tuple[str, ...], debug: bool) -> None:
    """asc-bench: how well do audio representations transfer?"""
    ctx.obj = Context(plugins, debug)


def main() -> None:
    cli(prog_name="asc-bench")


def context_plugins() -> tuple[str, ...]:
    """The `--plugin` modules of this invocation."""
    return click.get_current_context().find_object(Context).plugins


def plugin_manager():
    return get_manager(context_plugins())


def kv(values: Iterable[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in values:
        if "=" not in item:
            raise UsageError(f"{what} expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        pairs[key.strip()] = value.strip()
    return pairs


def yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or exc
        raise UsageError(f"value {text!r} is not valid YAML ({problem}); quote it or fix the brackets, "
                         f"e.g. --param class_pool='[a, b]'") from None


def yaml_kv(values: Iterable[str], what: str) -> dict[str, Any]:
    """KEY=VALUE options with each value read as YAML (`--param episodes=500` gives an int)."""
    return {k: yaml_value(v) for k, v in kv(values, what).items()}


def param_default(p: dict[str, Any]) -> str:
    if p.get("required"):
        return "(required)"
    d = p["default"]
    return "none" if d is None else d if isinstance(d, str) else json.dumps(d)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list) and all(isinstance(v, dict) and "meaning" in v for v in value):
        return "\n".join(f"{v['name']} = {param_default(v)}: {v['meaning']}" for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.3g}" if value < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def add_debug_to_subcommands(group: click.Group) -> None:
    """`asc-bench run ... --debug` works like `asc-bench --debug run ...` (every subcommand)."""
    def turn_on(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(Context).debug = True

    for command in group.commands.values():
        if not any(p.name == "debug" for p in command.params):
            command.params.append(click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True,
                                               callback=turn_on, help="Show tracebacks."))
        if isinstance(command, click.Group):
            add_debug_to_subcommands(command)
