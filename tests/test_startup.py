"""Start-up cost: the commands users wait on import no torch, and the closed-form sizes that
`asc-bench list encoders` shows equal those of really built models."""
from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from asc_bench.api import EncoderRequest, lazy
from asc_bench.importprobe import HEAVY, command_imports
from asc_bench.plugins import get_manager


def _imports_of(*args: str, before: str = "") -> dict:
    report = command_imports(args, before=before, timeout=120)
    return {"code": report.code, "heavy": list(report.heavy)}


def test_version_imports_neither_torch_nor_scipy():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "asc_bench", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "version" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "asc_bench.cli" in imported          # the trace is real: the CLI module was imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.parametrize("args", [("list", "encoders"), ("--help",), ("plugins",)])
def test_listing_commands_import_no_torch(args):
    report = _imports_of(*args)
    assert report == {"code": 0, "heavy": []}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["datasets", "protocols", "losses", "augmentations", "recipes", "tasks"])
def test_every_listing_imports_no_torch(kind):
    assert _imports_of("list", kind) == {"code": 0, "heavy": []}


@pytest.mark.slow
def test_the_import_check_can_fail():
    """The same check reports torch when an encoder module (which needs it) was imported."""
    assert "torch" in _imports_of("--version", before="import asc_bench_plugins.audiomae.encoder\n")["heavy"]


# ------------------------------------------------------------------------------------------ lazy
def test_lazy_calls_functions_and_instantiates_classes():
    join = lazy("os.path:join")
    assert join("a", "b") == __import__("os").path.join("a", "b")
    assert lazy("collections:OrderedDict").resolve() is __import__("collections").OrderedDict
    made = lazy("fractions:Fraction")(3, 6)
    assert type(made).__name__ == "Fraction" and made == 0.5
    again = pickle.loads(pickle.dumps(join))
    assert again.target == "os.path:join" and again("a", "b") == join("a", "b")
    with pytest.raises(ValueError, match="package.module:attr"):
        lazy("os.path.join")
    with pytest.raises(ImportError, match="no attribute 'nope'"):
        lazy("os.path:nope")()


def test_training_loop_instantiates_lazy_recipes():
    from asc_bench.training.loop import instantiate

    entry = get_manager().get("recipes", "contrastasc-student")
    recipe = instantiate(entry.recipe)
    from asc_bench_plugins.contrastasc.student import StudentRecipe

    assert isinstance(recipe, StudentRecipe)


def test_lazy_mixer_table_matches_the_mixers():
    from asc_bench_plugins.uamix_mae import MIXER_TABLE
    from asc_bench_plugins.uamix_mae.mixing import MIXERS

    registry = get_manager().registries["augmentations"]
    assert set(MIXER_TABLE) == set(MIXERS) == set(registry)
    for name, cls in MIXERS.items():
        assert registry[name].build.resolve() is cls
        assert registry[name].description == cls.__doc__.strip().splitlines()[0]


# ------------------------------------------------------------------------------------------ sizes
def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_closed_form_counts_equal_built_models_small_configs():
    """Non-default shapes (heads, biases, projections, other widths), really built on the CPU."""
    from asc_bench_plugins.audiomae.config import ViTConfig, param_count as vit_params
    from asc_bench_plugins.audiomae.vit import AudioViT
    from asc_bench_plugins.beats.config import BEATsConfig, param_count as beats_params
    from asc_bench_plugins.beats.model import BEATs

    for cfg in (ViTConfig(embed_dim=64, depth=2, num_heads=4, mlp_hidden=96, num_patches=64, num_classes=7),
                ViTConfig(embed_dim=32, depth=1, num_heads=2, mlp_hidden=32, patch=8, num_patches=32)):
        assert vit_params(cfg) == _params(AudioViT(cfg))
    for cfg in (BEATsConfig(encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=96, encoder_attention_heads=4,
                            conv_pos=16, conv_pos_groups=4, embed_dim=32, conv_bias=True, finetuned_model=True,
                            predictor_class=5),
                BEATsConfig(encoder_layers=1, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
                            conv_pos=8, conv_pos_groups=2, embed_dim=32, gru_rel_pos=False,
                            relative_position_embedding=False)):
        assert beats_params(cfg) == _params(BEATs(cfg))


def _check_cpmobile(configs, frame_counts) -> None:
    import torch

    from asc_bench.embedding.macs import count_macs
    from asc_bench_plugins.contrastasc.arch import N_MELS, macs, param_count
    from asc_bench_plugins.contrastasc.cpmobile import CPMobile, count_parameters

    for cfg in configs:
        model = CPMobile(cfg).eval()
        assert param_count(cfg) == count_parameters(model), cfg
        for frames in frame_counts(cfg):
            assert macs(cfg, frames) == count_macs(model, torch.zeros(1, 1, N_MELS, frames)), (cfg, frames)


def test_closed_form_cpmobile_counts_and_macs_equal_a_built_model():
    """The default 126k student and an odd custom shape; 1 s of audio and an odd frame count (the
    stride arithmetic)."""
    from asc_bench_plugins.contrastasc.arch import PRESETS, n_frames

    custom = PRESETS[0].config().with_(n_classes=3, blocks=(1, 2, 2), strides=(("b1", (2, 1)), ("b5", (1, 2))))
    _check_cpmobile([PRESETS[-1].config(), custom], lambda cfg: (n_frames(cfg.variant, 32000), 37))


@pytest.mark.slow
def test_closed_form_cpmobile_counts_and_macs_equal_built_models_every_preset():
    from asc_bench_plugins.contrastasc.arch import PRESETS, n_frames

    _check_cpmobile([p.config().with_(variant=v) for p in PRESETS for v in ("dcase23", "dcase24")],
                    lambda cfg: (n_frames(cfg.variant, 32000), 37))


@pytest.mark.slow
def test_every_builtin_summary_equals_its_randomly_built_encoder():
    """Each registered encoder with a parameter count, built by its own builder (--random-init, default
    sizes, on the CPU): the listed count is the built module's, and so is its MACs/s where it reports one."""
    import torch

    torch.set_num_threads(1)
    entries = get_manager().registries["encoders"]
    checked = []
    for name, entry in sorted(entries.items()):
        facts = entry.summary() if entry.summary else {}
        if not facts.get("params"):
            continue
        encoder = entry.build(EncoderRequest(checkpoint=None, random_init=True, options={}))
        assert facts["params"] == _params(encoder), name
        if hasattr(encoder, "macs_per_second"):
            assert facts["macs_per_s"] == pytest.approx(encoder.macs_per_second(), rel=1e-12), name
        checked.append(name)
        del encoder
    assert {"audiomae", "beats", "uamix-mae", "contrastasc-cpm-6k", "contrastasc-cpm-126k"} <= set(checked)


def test_single_process_distributed_answers_import_no_torch():
    """What the CLI and a fully cached run ask of `asc_bench.distributed` in one process needs no torch."""
    code = """
import sys
import numpy as np
from asc_bench import distributed as dist
info = dist.init(device="cpu")
rows = dist.gather_rows(np.arange(6, dtype=np.float32).reshape(3, 2), 3)
dist.barrier()
assert (info.world_size, dist.rank(), dist.world_size(), dist.is_main(), dist.is_distributed()) == (1, 0, 1, True, False)
assert rows.tolist() == [[0, 1], [2, 3], [4, 5]] and dist.info().backend is None
print(sorted(m for m in ("torch", "scipy") if m in sys.modules))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
