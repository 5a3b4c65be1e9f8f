"""The `asc-bench` command line: a thin click layer over the library API.

`app` holds the group and what every command shares; each other module is one command group
(`listing`: list, plugins; `run`: run, extract, episodes; `results`: compare, leaderboard; `bench`;
`data`; `train`). Importing this package registers them all.
"""
from __future__ import annotations

from asc_bench.cli import bench, data, listing, results, run, train  # noqa: F401  (registers the commands)
from asc_bench.cli.app import add_debug_to_subcommands, cli, main

add_debug_to_subcommands(cli)   # after every command is registered

__all__ = ["cli", "main"]
