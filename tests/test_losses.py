"""SupCon, CRD, KD (ContrastASC) and NNCLR (uaMix-MAE) against the official-code fixtures."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from asc_bench_plugins import contrastasc
from asc_bench_plugins.contrastasc.losses import CRDLoss, KDLoss, SupConLoss, build_kd
from asc_bench_plugins.uamix_mae.nnclr import NNCLRLoss, nnclr_loss
from tests.fixtures_path import fixtures_dir

# Tolerances: these tests run the losses in float64 on float64 fixtures, where the README's tier is abs 1e-6
# on a loss value; intermediate tensors are held to abs 1e-10 (rel 1e-6 for the logits), which the float64
# op order of the official code meets on every CPU and thread count (float64 rounding is ~1e-16).


@pytest.fixture(scope="module")
def fx() -> Path:
    return fixtures_dir() / "losses"


def _load(fx: Path, name: str) -> tuple[dict, dict]:
    return load_file(str(fx / f"{name}.safetensors")), json.loads((fx / f"{name}.json").read_text())


# --------------------------------------------------------------------------------------------- SupCon
SUPCON_CASES = {
    # fixture key: (constructor kwargs, features key, which positives)
    "supcon_2views_all_T0.07": ({}, "features_2views", "labels"),
    "supcon_2views_one_T0.07": ({"contrast_mode": "one"}, "features_2views", "labels"),
    "simclr_2views_all_T0.07": ({}, "features_2views", None),
    "supcon_2views_all_T0.1_base0.07": ({"temperature": 0.1}, "features_2views", "labels"),
    "supcon_1view_all_T0.07": ({}, "features_1view", "labels"),
    "supcon_1view_all_T0.07_lonely_anchor": ({}, "features_1view", "labels_lonely"),
    "supcon_softmask_1view_T0.07": ({}, "features_1view", "soft_labels"),
    "supcon_softmask_2views_T0.07": ({}, "features_2views", "soft_labels"),
    "supcon_softmask_1view_T0.1_base0.1": ({"temperature": 0.1, "base_temperature": 0.1}, "features_1view", "soft_mask"),
}


def _supcon(d: dict, kwargs: dict, feats: str, positives: str | None, dtype=torch.float64) -> torch.Tensor:
    loss = SupConLoss(**kwargs)
    x = d[feats].to(dtype)
    if positives is None:
        return loss(x)
    if positives.startswith("labels"):
        return loss(x, labels=d[positives])
    if positives == "soft_labels":
        return loss(x, soft_labels=d["soft_labels"])
    return loss(x, mask=d["soft_mask"])


@pytest.mark.parametrize("key", list(SUPCON_CASES))
def test_supcon_matches_fixture(fx, key):
    d, ref = _load(fx, "supcon")
    want = ref["values"][key]
    assert _supcon(d, *SUPCON_CASES[key]).item() == pytest.approx(want, abs=1e-6)
    assert _supcon(d, *SUPCON_CASES[key], dtype=torch.float32).item() == pytest.approx(want, rel=1e-4)


def test_supcon_soft_labels_lonely_anchor_and_gradients(fx):
    d, _ = _load(fx, "supcon")
    loss = SupConLoss()
    # soft labels Y and the mask Y·Yᵀ are the same positives; hard one-hot soft labels = labels
    y = d["soft_labels"]
    assert loss(d["features_2views"], soft_labels=y).item() == pytest.approx(
        loss(d["features_2views"], mask=y @ y.T).item(), abs=1e-12)
    onehot = F.one_hot(d["labels"], 4).double()
    assert loss(d["features_2views"], soft_labels=onehot).item() == pytest.approx(
        loss(d["features_2views"], labels=d["labels"]).item(), abs=1e-12)
    # the fixture's lonely anchor really has no positive (its value is checked above)
    lonely = d["labels_lonely"]
    assert (lonely == lonely[-1]).sum() == 1
    feats = d["features_2views"].clone().requires_grad_(True)
    loss(feats, labels=d["labels"]).backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at most one"):
        loss(d["features_2views"], labels=d["labels"], mask=d["soft_mask"])


# ------------------------------------------------------------------------------------------------ CRD
def _crd_from_fixture(d: dict, cfg: dict) -> CRDLoss:
    # the official module keeps T and momentum in a float32 buffer: use the same float32-rounded values
    crd = CRDLoss(cfg["s_dim"], cfg["t_dim"], cfg["n_data"], cfg["feat_dim"], cfg["nce_k"],
                  float(np.float32(cfg["nce_t"])), float(np.float32(cfg["nce_m"]))).double()
    params = d["init.contrast.params"]
    assert params[0] == cfg["nce_k"] and params[2] == -1 and params[3] == -1
    crd.load_state_dict({
        "embed_s.linear.weight": d["init.embed_s.linear.weight"], "embed_s.linear.bias": d["init.embed_s.linear.bias"],
        "embed_t.linear.weight": d["init.embed_t.linear.weight"], "embed_t.linear.bias": d["init.embed_t.linear.bias"],
        "memory_v1": d["init.contrast.memory_v1"], "memory_v2": d["init.contrast.memory_v2"], "z": params[2:4]})
    return crd


def test_crd_two_steps_match_fixture(fx):
    d, ref = _load(fx, "crd")
    cfg = ref["config"]
    crd = _crd_from_fixture(d, cfg)
    fresh = copy.deepcopy(crd)
    for s, want in enumerate(ref["steps"]):
        out = crd.step(d[f"step{s}.f_s"], d[f"step{s}.f_t"], d[f"step{s}.idx"], d[f"step{s}.contrast_idx"])
        torch.testing.assert_close(out.embed_s, d[f"step{s}.embed_s_out"], atol=1e-10, rtol=0)
        torch.testing.assert_close(out.embed_t, d[f"step{s}.embed_t_out"], atol=1e-10, rtol=0)
        torch.testing.assert_close(out.out_s, d[f"step{s}.out_s"], atol=1e-10, rtol=1e-6)
        torch.testing.assert_close(out.out_t, d[f"step{s}.out_t"], atol=1e-10, rtol=1e-6)
        assert out.s_loss.item() == pytest.approx(want["s_loss"], abs=1e-6)
        assert out.t_loss.item() == pytest.approx(want["t_loss"], abs=1e-6)
        assert out.loss.item() == pytest.approx(want["loss"], abs=1e-6)
        # Z fixed at the first call and kept (the second step's values equal the first's)
        assert crd.z[0].item() == pytest.approx(want["Z_v1"], rel=1e-6)
        assert crd.z[1].item() == pytest.approx(want["Z_v2"], rel=1e-6)
        torch.testing.assert_close(crd.memory_v1, d[f"step{s}.memory_v1_after"], atol=1e-10, rtol=0)
        torch.testing.assert_close(crd.memory_v2, d[f"step{s}.memory_v2_after"], atol=1e-10, rtol=0)
    # the public forward gives the same totals; the Z constants are part of the state dict
    for s, want in enumerate(ref["forward_total_loss"]):
        assert fresh(d[f"step{s}.f_s"], d[f"step{s}.f_t"], d[f"step{s}.idx"],
                     d[f"step{s}.contrast_idx"]).item() == pytest.approx(want, abs=1e-6)
    assert "z" in fresh.state_dict() and fresh.z[0] > 0


def test_crd_deferred_update_equals_inline_update(fx):
    """The DDP path (score without updating, then update_memory with the gathered batch) is the same."""
    d, ref = _load(fx, "crd")
    inline, deferred = _crd_from_fixture(d, ref["config"]), _crd_from_fixture(d, ref["config"])
    for s in range(2):
        args = (d[f"step{s}.f_s"], d[f"step{s}.f_t"], d[f"step{s}.idx"], d[f"step{s}.contrast_idx"])
        a = inline.step(*args)
        b = deferred.step(*args, update_memory=False)
        assert not torch.equal(deferred.memory_v1, inline.memory_v1)     # nothing written yet
        deferred.update_memory(args[2], b.embed_s, b.embed_t)
        assert a.loss.item() == b.loss.item()
        assert torch.equal(deferred.memory_v1, inline.memory_v1) and torch.equal(deferred.memory_v2, inline.memory_v2)


def test_crd_negative_sampler(fx):
    d, ref = _load(fx, "crd")
    labels = d["dataset_labels"]
    cfg = ref["config"]
    crd = CRDLoss(cfg["s_dim"], cfg["t_dim"], cfg["n_data"], cfg["feat_dim"], nce_k=20, dataset_labels=labels, seed=3)
    idx = torch.tensor([0, 5, 10, 31])
    ci = crd.sample_contrast_idx(idx)
    assert ci.shape == (4, 21) and torch.equal(ci[:, 0], idx)
    for row, i in zip(ci, idx):
        negatives = row[1:]
        assert (labels[negatives] != labels[i]).all()             # other classes only
        assert negatives.unique().numel() == 20                   # no repeats while K <= pool size (24)
    again = CRDLoss(cfg["s_dim"], cfg["t_dim"], cfg["n_data"], cfg["feat_dim"], nce_k=20, dataset_labels=labels, seed=3)
    assert torch.equal(again.sample_contrast_idx(idx), ci)       # seeded
    many = CRDLoss(cfg["s_dim"], cfg["t_dim"], cfg["n_data"], cfg["feat_dim"], nce_k=40, dataset_labels=labels)
    big = many.sample_contrast_idx(idx)                           # K > pool: with replacement, still other classes
    assert (labels[big[:, 1:]] != labels[idx][:, None]).all()
    uniform = CRDLoss(cfg["s_dim"], cfg["t_dim"], cfg["n_data"], cfg["feat_dim"], nce_k=6)
    u = uniform.sample_contrast_idx(idx)
    assert torch.equal(u[:, 0], idx) and u.min() >= 0 and u.max() < cfg["n_data"]
    loss = uniform(torch.randn(4, cfg["s_dim"]), torch.randn(4, cfg["t_dim"]), idx)   # draws its own negatives
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------------------------------- KD
@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_kd_both_conventions(fx, t):
    d, ref = _load(fx, "kd")
    s, te = d["student_logits"], d["teacher_logits"]
    assert KDLoss(t, "batchmean")(s, te).item() == pytest.approx(ref["values"][f"repdistiller_DistillKL_T{t}"], abs=1e-6)
    assert KDLoss(t, "batch_class_mean")(s, te).item() == pytest.approx(ref["values"][f"cpjku_kd_T{t}"], abs=1e-6)


def test_kd_cpjku_total_and_no_silent_default(fx):
    d, ref = _load(fx, "kd")
    ce = F.cross_entropy(d["student_logits"], d["targets"])
    assert ce.item() == pytest.approx(ref["values"]["cross_entropy"], abs=1e-6)
    total = 0.02 * ce + 0.98 * KDLoss(2.0, "batch_class_mean")(d["student_logits"], d["teacher_logits"])
    assert total.item() == pytest.approx(ref["values"]["cpjku_total_kd_lambda0.02_T2"], abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        build_kd(temperature=4.0)
    with pytest.raises(ValueError, match="batchmean"):
        KDLoss(4.0, "mean")
    assert isinstance(build_kd(temperature=4.0, reduction="batchmean"), KDLoss)


def test_losses_are_registered():
    found = {}
    contrastasc.register_losses(lambda name, build, **kw: found.setdefault(name, build))
    assert set(found) == {"supcon", "crd", "kd"}
    assert isinstance(found["supcon"](temperature=0.1), SupConLoss)


# ---------------------------------------------------------------------------------------------- NNCLR
def _nnclr(d: dict, cfg: dict, **kw) -> NNCLRLoss:
    loss = NNCLRLoss(dim=cfg["dim"], queue_size=cfg["queue"], temperature=cfg["temperature"], **kw).double()
    loss.queue.copy_(d["queue"])
    loss.queue_id.copy_(d["queue_id"])
    return loss


def test_nnclr_matches_fixture(fx):
    d, ref = _load(fx, "nnclr")
    cfg, want = ref["config"], ref["values"]
    loss = _nnclr(d, cfg)
    assert (d["queue_id"][:, None] == d["ids"][None, :]).any()      # own-id exclusion is exercised
    i0, i1 = loss.find_nn(d["projected0"], d["ids"]).index, loss.find_nn(d["projected1"], d["ids"]).index
    assert torch.equal(i0, d["nn_idx0"]) and torch.equal(i1, d["nn_idx1"])
    t = cfg["temperature"]
    assert nnclr_loss(d["predicted0"], d["queue"][i1], t).item() == pytest.approx(want["loss0"], abs=1e-6)
    assert nnclr_loss(d["predicted1"], d["queue"][i0], t).item() == pytest.approx(want["loss1"], abs=1e-6)
    assert nnclr_loss(d["predicted0"], d["queue"][i1], t, transposed=True).item() == pytest.approx(
        want["loss0_transposed"], abs=1e-6)
    for transposed, key in ((False, "loss_sym"), (True, "loss_sym_transposed")):
        fresh = _nnclr(d, cfg, transposed=transposed)
        got = fresh(d["predicted0"], d["predicted1"], d["projected0"], d["projected1"], d["ids"])
        assert got.item() == pytest.approx(want[key], abs=1e-6)   # lookup happened before the enqueue
        b = d["ids"].numel()
        torch.testing.assert_close(fresh.queue[:b], F.normalize(d["projected0"], dim=-1))
        assert torch.equal(fresh.queue_id[:b], d["ids"]) and int(fresh.queue_ptr) == b
        assert torch.equal(fresh.queue[b:], d["queue"][b:])


def test_nnclr_topk_from_stored_dice(fx):
    d, ref = _load(fx, "nnclr")
    loss = _nnclr(d, ref["config"], topk=ref["config"]["topk"])
    look = loss.find_nn(d["projected0"], d["ids"], dice=d["topk_dice0"])
    assert torch.equal(look.candidates, d["topk_candidates0"])
    assert torch.equal(look.index, d["topk_idx0"])
    # candidates never carry the query's own id; a drawn neighbour is always one of the candidates
    assert not (d["queue_id"][look.candidates] == d["ids"][:, None]).any()
    drawn = loss.find_nn(d["projected0"], d["ids"])
    assert (drawn.candidates == drawn.index[:, None]).any(dim=1).all()


def test_nnclr_enqueue_wraps_and_soft_targets():
    loss = NNCLRLoss(dim=4, queue_size=6, temperature=0.2)
    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)
    loss.enqueue(first, torch.arange(4))
    loss.enqueue(second, torch.arange(4, 8))                  # 8 rows into 6 slots: FIFO wrap-around
    assert loss.queue_id.tolist() == [6, 7, 2, 3, 4, 5] and int(loss.queue_ptr) == 2
    torch.testing.assert_close(loss.queue[0], F.normalize(second[2], dim=0))
    pred, nn_ = torch.randn(4, 4, generator=g), F.normalize(torch.randn(4, 4, generator=g), dim=-1)
    eye = torch.eye(4)
    assert nnclr_loss(pred, nn_, 0.2, targets=eye).item() == pytest.approx(nnclr_loss(pred, nn_, 0.2).item())
