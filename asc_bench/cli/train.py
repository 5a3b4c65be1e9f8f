"""`asc-bench train RECIPE`: the seeds' training recipes in the shared loop."""
from __future__ import annotations

import click

from asc_bench import distributed as dist
from asc_bench.cli.app import cli, context_plugins, guard, out, yaml_kv


@cli.command("train")
@click.argument("recipe")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Recipe config (YAML; unknown keys are errors).")
@click.option("--data-root", type=click.Path(file_okay=False), help="Root of the training dataset.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run folder (default runs/<recipe>).")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --out.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after N optimizer steps (smoke runs).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@guard
def train_cmd(recipe: str, config_path: str, data_root: str | None, out_dir: str | None, resume: bool,
              max_steps: int | None, overrides: tuple[str, ...]) -> None:
    """Train a recipe (ContrastASC teacher/student, uaMix-MAE tuning) in the shared loop; torchrun-aware."""
    from asc_bench.training.loop import run_training

    result = run_training(recipe, config_path, data_root=data_root, out_dir=out_dir, resume=resume,
                          max_steps=max_steps, plugins=context_plugins(),
                          overrides=yaml_kv(overrides, "--set"))
    if dist.is_main():
        rate = f", {result.steps_per_s:.2f} steps/s" if result.steps_per_s else ""
        out.print(f"{recipe}: steps {result.start_step}..{result.steps_done}{rate}; run folder {result.out_dir}",
                  highlight=False)
        if result.export_path:
            out.print(f"exported: {result.export_path}", highlight=False)
