"""Mixers for uaMix-MAE: T-CutMix properties (seeded loops; hypothesis is not installed) and ablations."""
from __future__ import annotations

import pytest
import torch
from scipy import stats

from asc_bench_plugins.uamix_mae.mixing import MIXERS, TCutMix, build_mixer

SHAPES = [(4, 1, 50, 16), (6, 37, 8), (3, 1, 7, 5), (8, 100, 3)]


def _batch(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    # distinct values everywhere, so "replaced" is detectable exactly
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return x + torch.arange(shape[0]).view(-1, *([1] * (len(shape) - 1))) * 100.0


def _soft_labels(b: int, c: int, seed: int) -> torch.Tensor:
    return torch.softmax(torch.randn(b, c, generator=torch.Generator().manual_seed(seed)), dim=1)


@pytest.mark.parametrize("shape", SHAPES)
def test_t_cutmix_replaces_one_time_span(shape):
    for seed in range(25):
        for alpha in (0.2, 1.0, 4.0):
            x = _batch(shape, seed)
            mixer = TCutMix(alpha=alpha, per_sample=seed % 2 == 1)
            y = None if seed % 3 == 0 else _soft_labels(shape[0], 5, seed)
            mixed, virtual = mixer(x, y, torch.Generator().manual_seed(seed))
            info = mixer.last
            assert mixed.shape == x.shape
            xs, ms = x.reshape(shape[0], shape[-2], shape[-1]), mixed.reshape(shape[0], shape[-2], shape[-1])
            t = shape[-2]
            for i in range(shape[0]):
                j = int(info.perm[i])
                changed = (ms[i] != xs[i])                       # (T, F)
                frames = changed.any(dim=1)
                if j != i:
                    # whole frequency axis inside the span, nothing outside it
                    assert torch.equal(frames, changed.all(dim=1))
                    span = torch.nonzero(frames).squeeze(1)
                    if span.numel():
                        assert span.max() - span.min() + 1 == span.numel()       # contiguous
                        assert torch.equal(ms[i, span], xs[j, span])              # from the partner
                    assert span.numel() == int(info.length[i])
                    # replaced fraction = 1 - lambda (lambda recomputed from the span)
                    assert span.numel() / t == pytest.approx(1 - float(info.lam[i]), abs=1e-12)
                else:
                    assert torch.equal(ms[i], xs[i])
                assert 0 <= int(info.start[i]) <= t - int(info.length[i])
            labels = torch.eye(shape[0]) if y is None else y
            assert torch.allclose(virtual.sum(dim=1), torch.ones(shape[0], dtype=virtual.dtype))
            lam = info.lam.to(virtual.dtype)[:, None]
            torch.testing.assert_close(virtual, lam * labels + (1 - lam) * labels[info.perm])
            if not mixer.per_sample:
                # one lambda per batch: every span has the same length
                assert info.length.unique().numel() == 1


def test_t_cutmix_lambda_follows_beta_and_is_seeded():
    t = 2000                                    # rounding to 1/T is negligible for the test
    x = torch.zeros(64, t, 1)
    mixer = TCutMix(alpha=0.4, per_sample=True)
    lams = []
    g = torch.Generator().manual_seed(11)
    for _ in range(20):
        mixer(x, None, g)
        lams.append(mixer.last.lam)
    lams = torch.cat(lams).numpy()
    assert stats.kstest(lams, "beta", args=(0.4, 0.4)).pvalue > 1e-3
    a, _ = TCutMix(alpha=0.4)(_batch((5, 30, 4), 0), None, torch.Generator().manual_seed(3))
    b, _ = TCutMix(alpha=0.4)(_batch((5, 30, 4), 0), None, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_t_cutmix_probability_and_errors():
    x = _batch((4, 20, 6), 1)
    mixed, virtual = TCutMix(p=0.0)(x, None, torch.Generator().manual_seed(0))
    assert torch.equal(mixed, x) and torch.equal(virtual, torch.eye(4))
    with pytest.raises(ValueError):
        TCutMix()(torch.zeros(2, 3, 4, 5), None, None)          # [B, C>1, T, F] is not an fbank batch
    with pytest.raises(ValueError):
        TCutMix()(x, torch.ones(3, 2), None)
    with pytest.raises(ValueError, match="t-cutmix"):
        build_mixer("cutmix")


def test_tf_cutmix_box():
    for seed in range(20):
        x = _batch((5, 1, 40, 24), seed)
        mixer = build_mixer("tf-cutmix", alpha=1.0)
        mixed, virtual = mixer(x, None, torch.Generator().manual_seed(seed))
        info = mixer.last
        for i in range(5):
            changed = (mixed[i, 0] != x[i, 0])
            if int(info.perm[i]) == i:
                assert not changed.any()
                continue
            rows, cols = torch.nonzero(changed.any(dim=1)).squeeze(1), torch.nonzero(changed.any(dim=0)).squeeze(1)
            assert changed.sum() == rows.numel() * cols.numel() == int(info.length[i]) * int(info.f_length[i])
            assert changed.sum() / changed.numel() == pytest.approx(1 - float(info.lam[i]), abs=1e-12)
        assert torch.allclose(virtual.sum(dim=1), torch.ones(5, dtype=virtual.dtype))


def test_mixup_ls_and_none():
    x = _batch((6, 1, 10, 4), 2)
    y = _soft_labels(6, 3, 2)
    mixer = build_mixer("mixup-ls", alpha=1.0, smoothing=0.1)
    mixed, virtual = mixer(x, y, torch.Generator().manual_seed(5))
    lam, perm = mixer.last.lam, mixer.last.perm
    lam_x = lam.float().view(-1, 1, 1, 1)
    torch.testing.assert_close(mixed, lam_x * x + (1 - lam_x) * x[perm])
    lam_y = lam.to(y.dtype)[:, None]
    torch.testing.assert_close(virtual, 0.9 * (lam_y * y + (1 - lam_y) * y[perm]) + 0.1 / 3)
    assert torch.allclose(virtual.sum(dim=1), torch.ones(6))
    same, labels = build_mixer("none")(x, None, None)
    assert same is x and torch.equal(labels, torch.eye(6))
    assert set(MIXERS) == {"t-cutmix", "mixup-ls", "tf-cutmix", "none"}
