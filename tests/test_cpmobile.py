"""CP-Mobile students: official fixtures, frontends, checkpoints through the builder, sizes and MACs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from asc_bench.api import CheckpointError, EncoderRequest, UsageError
from asc_bench.embedding.checkpoints import read_checkpoint, strip_prefix
from asc_bench.embedding.macs import count_macs
from asc_bench_plugins import contrastasc
from asc_bench_plugins.contrastasc.checkpoint import load_student, save_student
from asc_bench_plugins.contrastasc.cpmobile import (ChannelLayerNorm, CPMobile, CPMobileConfig, count_parameters,
                                                    count_parameters_of)
from asc_bench_plugins.contrastasc.encoder import size_label
from asc_bench_plugins.contrastasc.frontend import LogMel
from asc_bench_plugins.contrastasc.heads import ProjectionConfig
from tests.fixtures_path import fixtures_dir


@pytest.fixture(scope="module")
def fx() -> Path:
    return fixtures_dir() / "cpmobile"


@pytest.fixture(scope="module")
def meta(fx: Path) -> dict:
    return json.loads((fx / "meta.json").read_text())


@pytest.fixture(scope="module")
def encoders() -> dict:
    """What the plugin registers, through its hook."""
    found: dict = {}

    def register(name, build, **kw):
        found[name] = {"build": build, **kw}
    contrastasc.register_encoders(register)
    return found


def fixture_config(entry: dict) -> CPMobileConfig:
    return CPMobileConfig(variant=entry["implementation"], base_channels=entry["base_channels"],
                          multiplier=entry["channels_multiplier"], expansion=entry["expansion_rate"],
                          blocks=tuple(entry["n_blocks"]), n_classes=entry["n_classes"],
                          strides=tuple(sorted((k, tuple(v)) for k, v in entry["strides"].items())))


def official_model(fx: Path, entry: dict) -> CPMobile:
    model = CPMobile(fixture_config(entry))
    model.load_state_dict(read_checkpoint(fx / entry["name"] / "state_dict.pt"))
    return model.eval()


MODEL_DIRS = ["dcase23_cpmobile_b8_m1.8_e2.1", "dcase24_baseline_b16_m1.8_e2.1"]


def _entry(meta: dict, name: str) -> dict:
    return next(m for m in meta["models"] if m["name"] == name)


@pytest.mark.parametrize("name", MODEL_DIRS)
def test_official_model_matches_fixture(fx, meta, name):
    entry = _entry(meta, name)
    model = official_model(fx, entry)
    assert count_parameters(model) == entry["n_params"]
    assert len(model.state_dict()) == entry["state_dict_keys"]
    io = load_file(str(fx / name / "io.safetensors"))
    with torch.no_grad():
        m64 = official_model(fx, entry).double()
        stages = m64.forward_stages(io["input_logmel"].double())
        torch.testing.assert_close(m64.pooled(stages["s3"]), io["embedding"], atol=1e-10, rtol=0)
        torch.testing.assert_close(m64.logits(stages["s3"]), io["logits"], atol=1e-10, rtol=0)
        for key in ("in_c", "s1", "s2", "s3"):
            torch.testing.assert_close(stages[key].float(), io[f"feat_{key}"], atol=1e-5, rtol=0)   # README: feat_* are float32 roundings of the float64 run
        feats = model.forward_features(io["input_logmel"])
        torch.testing.assert_close(model.pooled(feats).double(), io["embedding"], atol=1e-5, rtol=1e-4)   # README: float32 implementation abs 1e-5, rel 1e-4
        torch.testing.assert_close(model(io["input_logmel"]).double(), io["logits"], atol=1e-5, rtol=1e-4)   # README: float32 implementation abs 1e-5, rel 1e-4


@pytest.mark.parametrize("kind,file", [("dcase23", "frontend.safetensors"), ("dcase24", "frontend_dcase24.safetensors")])
def test_frontend_matches_fixture(fx, kind, file):
    data = load_file(str(fx / file))
    frontend = LogMel(kind)
    out = frontend(data["waveform"])
    assert out.shape == data["logmel"].shape
    assert frontend.n_frames(data["waveform"].shape[1]) == data["logmel"].shape[-1]
    torch.testing.assert_close(out, data["logmel"], atol=2e-4, rtol=0)   # README: abs 2e-4 for either log-mel
    # batched = one at a time (no cross-talk between clips)
    torch.testing.assert_close(frontend(data["waveform"][2:3]), out[2:3], atol=1e-5, rtol=0)   # one clip alone or batched: same frontend arithmetic


@pytest.mark.parametrize("name,ckpt", [(MODEL_DIRS[0], "lightning_style.ckpt"), (MODEL_DIRS[1], "lightning_style.ckpt"),
                                       (MODEL_DIRS[0], "state_dict.safetensors")])
def test_official_checkpoint_loads_through_builder(fx, meta, encoders, name, ckpt):
    entry = _entry(meta, name)
    # the registered size with the fixture's widths; the variant and head come from the checkpoint
    target = "contrastasc-cpm-" + size_label(count_parameters_of(fixture_config(entry).with_(variant="dcase23")))
    enc = encoders[target]["build"](EncoderRequest(checkpoint=fx / name / ckpt, random_init=False, options={}))
    assert enc.model.config.variant == entry["implementation"]
    assert enc.sample_rate == 32000 and enc.embed_dim == entry["shapes"]["embedding"][1]
    reference = read_checkpoint(fx / name / "state_dict.pt")
    own = enc.model.state_dict()
    assert set(own) == set(reference)
    assert all(torch.equal(own[k], reference[k]) for k in own)
    io = load_file(str(fx / name / "io.safetensors"))
    with torch.no_grad():
        emb = enc.model.pooled(enc.model.forward_features(io["input_logmel"]))
        wave = load_file(str(fx / ("frontend.safetensors" if entry["implementation"] == "dcase23"
                                   else "frontend_dcase24.safetensors")))["waveform"]
        full = enc(wave, torch.full((4,), wave.shape[1]))
        manual = enc.model.pooled(enc.model.forward_features(LogMel(entry["implementation"])(wave).unsqueeze(1)))
    torch.testing.assert_close(emb.double(), io["embedding"], atol=1e-5, rtol=1e-4)   # README: float32 implementation abs 1e-5, rel 1e-4
    torch.testing.assert_close(full, manual, atol=1e-6, rtol=0)
    assert enc.config()["checkpoint_sha256"] and enc.config()["frontend"] == entry["implementation"]


def test_builder_errors(fx, encoders):
    build = encoders["contrastasc-cpm-6k"]["build"]
    ckpt = fx / MODEL_DIRS[0] / "lightning_style.ckpt"
    with pytest.raises(UsageError, match="(?i)valid options:.*variant"):
        build(EncoderRequest(checkpoint=ckpt, random_init=False, options={"colour": "red"}))
    with pytest.raises(UsageError, match="norm"):
        build(EncoderRequest(checkpoint=None, random_init=True, options={"norm": "group"}))
    with pytest.raises(UsageError, match="dcase23"):
        build(EncoderRequest(checkpoint=ckpt, random_init=False, options={"variant": "dcase24"}))
    with pytest.raises(CheckpointError, match="random-init"):
        build(EncoderRequest(checkpoint=None, random_init=False, options={}))
    with pytest.raises(CheckpointError, match="contrastasc-cpm-6k"):   # wrong size: names the one that fits
        encoders["contrastasc-cpm-126k"]["build"](EncoderRequest(checkpoint=ckpt, random_init=False, options={}))
    with pytest.raises(UsageError, match="projection"):
        build(EncoderRequest(checkpoint=ckpt, random_init=False, options={"output": "projection"}))


def _spec_table() -> list[tuple[int, float, float, int, int | None]]:
    """Rows `| base, multiplier, expansion | DCASE23 | DCASE24 | ...` of the spec's parameter table."""
    text = (fixtures_dir().parent / "specs" / "contrastasc.md").read_text()
    rows = []
    for m in re.finditer(r"^\| (\d+), ([\d.]+), ([\d.]+) \| ([\d,]+) \| ([\d,]*)", text, flags=re.M):
        d24 = int(m.group(5).replace(",", "")) if m.group(5) else None
        rows.append((int(m.group(1)), float(m.group(2)), float(m.group(3)), int(m.group(4).replace(",", "")), d24))
    assert len(rows) >= 6, "the spec's parameter table was not found"
    return rows


def _formula_count(base: int, mult: float, exp: float, n_classes: int, variant: str) -> int:
    """Spec section 1.4 counting formula, written independently of the module."""
    def div8(v: float) -> int:
        r = max(8, int((v + 4) // 8 * 8))
        return r + 8 if r < 0.9 * v else r
    c0 = div8(base)
    widths = [c0] + [div8(c0 * mult ** k) for k in range(3)]
    q = c0 // 4
    total = 9 * q + 2 * q + 9 * q * c0 + 2 * c0
    c_in = c0
    for stage, depth in enumerate((3, 2, 1)):
        for _ in range(depth):
            e, c_out = div8(c_in * exp), widths[stage + 1]
            total += c_in * e + 2 * e + 9 * e + 2 * e + e * c_out + 2 * c_out + (2 if variant == "dcase23" else 0)
            c_in = c_out
    return total + c_in * n_classes + 2 * n_classes


def test_parameter_counts_match_spec_table():
    for base, mult, exp, d23, d24 in _spec_table():
        cfg = CPMobileConfig(base_channels=base, multiplier=mult, expansion=exp)
        assert count_parameters_of(cfg) == d23 == _formula_count(base, mult, exp, 10, "dcase23")
        if d24 is not None:
            assert count_parameters_of(cfg.with_(variant="dcase24")) == d24
    for n_classes in (3, 15):
        cfg = CPMobileConfig(base_channels=24, multiplier=1.8, expansion=2.1, n_classes=n_classes, variant="dcase24")
        assert count_parameters_of(cfg) == _formula_count(24, 1.8, 2.1, n_classes, "dcase24")


def test_registered_sizes(encoders):
    table = {(b, m, e): d23 for b, m, e, d23, _ in _spec_table()}
    names = sorted(encoders, key=lambda n: encoders[n]["summary"]()["params"])
    assert names == [f"contrastasc-cpm-{k}" for k in ("6k", "19k", "35k", "61k", "126k")]
    for name in names:
        s = encoders[name]["summary"]()
        assert s["params"] == table[(s["base_channels"], s["multiplier"], s["expansion"])]
        assert encoders[name]["requires_weights"] and s["macs_per_s"] > 0
    s = encoders["contrastasc-cpm-126k"]["summary"]()
    assert (s["base_channels"], s["multiplier"], s["expansion"], s["variant"]) == (32, 2.3, 3.0, "dcase23")


@pytest.mark.parametrize("placement", ["head", "projection", "both"])
def test_layernorm_student_keeps_counts(placement):
    base = CPMobileConfig(base_channels=16, multiplier=1.8, expansion=2.1, projection=ProjectionConfig(32, 24))
    ln = base.with_(norm="layer", norm_placement=placement)
    m_bn, m_ln = CPMobile(base), CPMobile(ln)
    assert count_parameters(m_ln) == count_parameters(m_bn) == count_parameters_of(base)
    # a LayerNorm inside the projection head is a new layer: 2 x hidden parameters, outside the classifier
    extra = 2 * 24 if placement in ("projection", "both") else 0
    assert count_parameters(m_ln, include_projection=True) == count_parameters(m_bn, include_projection=True) + extra
    assert isinstance(m_ln.feed_forward[1], ChannelLayerNorm) == (placement in ("head", "both"))
    assert (m_ln.projection.norm is not None) == (placement in ("projection", "both"))
    x = torch.randn(2, 10, 5, 3)
    norm = ChannelLayerNorm(10)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
        ref = torch.nn.functional.layer_norm(x.transpose(1, 3), (10,), norm.weight, norm.bias).transpose(1, 3)
    torch.testing.assert_close(norm(x), ref)
    with pytest.raises(ValueError, match="projection head"):
        CPMobileConfig(norm="layer", norm_placement="projection")


def _perturb(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.2 * torch.randn(t.shape, generator=g, dtype=t.dtype))
                if t.dim() == 1:
                    t.abs_()      # keeps running variances positive


def test_save_load_student_round_trip(tmp_path, encoders):
    cfg = CPMobileConfig(variant="dcase24", base_channels=8, multiplier=1.8, expansion=2.1, n_classes=7,
                         norm="layer", norm_placement="both", projection=ProjectionConfig(16, 12))
    model = CPMobile(cfg).eval()
    _perturb(model, 3)
    weights, meta = save_student(tmp_path / "stud", model, cfg.to_dict(), extra={"recipe": "test"})
    assert weights.name == "stud.safetensors" and meta.name == "stud.json"
    loaded, doc = load_student(weights)
    assert loaded.config == cfg and doc["params"] == count_parameters(model)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    enc = encoders["contrastasc-cpm-61k"]["build"](
        EncoderRequest(checkpoint=weights, random_init=False, options={"output": "projection"}))
    assert enc.model.config == cfg and enc.embed_dim == 16
    wave = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = enc(wave, torch.tensor([8000, 8000]))
        ref = model.projection(model.pooled(model.forward_features(LogMel("dcase24")(wave).unsqueeze(1))))
    torch.testing.assert_close(got, ref)
    with pytest.raises(UsageError, match="contradict"):
        encoders["contrastasc-cpm-61k"]["build"](
            EncoderRequest(checkpoint=weights, random_init=False, options={"norm": "batch"}))
    meta.unlink()   # without its JSON the file is read as an official state dict, which it is not
    with pytest.raises(CheckpointError):
        encoders["contrastasc-cpm-6k"]["build"](EncoderRequest(checkpoint=weights, random_init=False, options={}))


def test_embedding_does_not_depend_on_batch_mates(encoders):
    enc = encoders["contrastasc-cpm-6k"]["build"](EncoderRequest(checkpoint=None, random_init=True, options={"seed": "4"}))
    _perturb(enc.model, 5)
    g = torch.Generator().manual_seed(1)
    wave = torch.randn(3, 16000, generator=g)
    lengths = torch.tensor([16000, 9000, 4000])
    noisy = wave.clone()
    noisy[1, 9000:] = 5.0           # whatever sits past a clip's length must not matter
    noisy[2, 4000:] = -3.0
    with torch.no_grad():
        batch = enc(noisy, lengths)
        alone = torch.cat([enc(wave[i:i + 1, :n], lengths[i:i + 1]) for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)   # padded batch vs per-clip: float32 op order only
    assert not torch.allclose(batch[0], batch[1])
    # random weights come from the seed option alone
    build = encoders["contrastasc-cpm-6k"]["build"]
    a, b, c = (build(EncoderRequest(checkpoint=None, random_init=True, options={"seed": s})).model.state_dict()
               for s in ("4", "4", "5"))
    k = "stages.s1.b1.block.0.0.weight"
    assert torch.equal(a[k], b[k]) and not torch.equal(a[k], c[k])


def test_mac_counter_matches_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    for cfg in (CPMobileConfig(), CPMobileConfig(variant="dcase24", base_channels=16, multiplier=1.8, expansion=2.1)):
        model = CPMobile(cfg).eval()
        x = torch.zeros(2, 1, 256, 65)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
        macs = count_macs(model, x)
        assert macs == counter.get_total_flops() // 2
        with torch.device("meta"):
            meta_model = CPMobile(cfg)
        assert count_macs(meta_model, torch.empty(2, 1, 256, 65, device="meta")) == macs
    # attention-ish: nn.MultiheadAttention and hand-written attention are counted too
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    q = torch.randn(3, 5, 16)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        mha(q, q, q, need_weights=True)     # explicit bmm path, which FlopCounterMode sees on CPU
    assert count_macs(mha, (q, q, q)) == counter.get_total_flops() // 2

    class HandAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = torch.nn.Linear(16, 48)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            a = (q @ k.transpose(-1, -2)).softmax(-1)
            return torch.bmm(a, v)

    hand = HandAttention()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        hand(q)
    assert count_macs(hand, q) == counter.get_total_flops() // 2

    class FusedAttention(HandAttention):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    # FlopCounterMode has no CPU rule for fused attention: Q·Kᵀ and A·V are B·L·S·(E + Ev) MACs
    assert count_macs(FusedAttention(), q) == 3 * 5 * 16 * 48 + 3 * 5 * 5 * (16 + 16)


def test_encoder_macs_match_counter(encoders):
    s = encoders["contrastasc-cpm-19k"]["summary"]()
    model = CPMobile(CPMobileConfig(base_channels=16, multiplier=1.8, expansion=2.1))
    assert s["macs_per_s"] == count_macs(model, torch.zeros(1, 1, 256, LogMel("dcase23").n_frames(32000)))


def test_lightning_prefix_is_stripped(fx):
    raw = read_checkpoint(fx / MODEL_DIRS[0] / "lightning_style.ckpt")
    assert all(k.startswith("model.") for k in raw["state_dict"])
    assert set(strip_prefix(raw["state_dict"], ("model.",))) == set(read_checkpoint(fx / MODEL_DIRS[0] / "state_dict.pt"))
