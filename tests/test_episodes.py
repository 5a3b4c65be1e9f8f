"""Episode sampling (determinism, disjointness, constraints) and the four protocols."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from scipy import stats as sps

from asc_bench.api import AscBenchError, EvalData, UsageError
from asc_bench.evaluation.episodes import episode_hash, sample_episodes
from asc_bench_plugins.protocols import knn, linear_probe, logistic, prototype

BASE = {"n_way": 5, "k_shot": 2, "n_query": 4, "episodes": 300}


def _labels(counts):
    return np.repeat(np.arange(len(counts)), counts)


def _episodes(labels, params=BASE, seed=0, **kw):
    return sample_episodes(labels, None, params, seed, **kw)


# ----------------------------------------------------------------------------------- determinism
def test_same_inputs_same_episodes_and_hash():
    labels = _labels([12, 9, 15, 10, 11, 8, 30])
    a = _episodes(labels, spec_hash="s", fingerprint="f")
    b = _episodes(labels, spec_hash="s", fingerprint="f")
    for name in ("support_idx", "query_idx", "query_mask", "classes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.hash == b.hash and len(a.hash) == 64


@pytest.mark.parametrize("change", [{"seed": 1}, {"spec_hash": "t"}, {"fingerprint": "g"},
                                    {"params": {**BASE, "k_shot": 1}}])
def test_hash_changes_with_seed_spec_fingerprint_params(change):
    labels = _labels([12, 9, 15, 10, 11, 8, 30])
    kw = {"seed": 0, "spec_hash": "s", "fingerprint": "f", "params": BASE}
    ref = sample_episodes(labels, None, kw["params"], kw["seed"], spec_hash="s", fingerprint="f")
    kw.update(change)
    other = sample_episodes(labels, None, kw["params"], kw["seed"], spec_hash=kw["spec_hash"],
                            fingerprint=kw["fingerprint"])
    assert other.hash != ref.hash


_CHILD = """
import sys, numpy as np
from asc_bench.evaluation.episodes import sample_episodes
labels = np.repeat(np.arange(7), [12, 9, 15, 10, 11, 8, 30])
print(sample_episodes(labels, None, {"n_way": 5, "k_shot": 2, "n_query": 4, "episodes": 300}, 0,
                      spec_hash="s", fingerprint="f").hash)
"""


def test_same_hash_in_other_processes_and_thread_counts():
    labels = _labels([12, 9, 15, 10, 11, 8, 30])
    here = _episodes(labels, spec_hash="s", fingerprint="f").hash
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
               "MKL_NUM_THREADS": threads}
        out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == here


# Episodes drawn under asc-bench/rng/2 (sampler paths: plain, rest, split constraints, group-
# disjoint with fixed Q and with rest). A speed-up of the sampler must keep these; a change of
# the draws bumps the RNG tag (asc_bench.evaluation.episodes) and these hashes with it.
_PINNED_HASHES = {
    "plain": "9fb865680dba02cd3eff61efe25c63b4a5555e6bfe3cf2330b46b59669df422a",
    "rest": "e638fc0cb9588ef9aefe401e297bc7a15aa5e6c10e5a87fa92b389339c0c2e56",
    "splits": "a4a2874b8e8e42a4799249e8a874dd1fac87b1dcdc80eb34d994e8721a98c52d",
    "groups": "3a989af3c44a9597bd12d88ddc6d85b7a878a8ce33a2290bf3b6219e9df31fc1",
    "groups_rest": "0410ea4347e33033be7265cc23d6657c46d1df22036c2408fc1fcbc9ae0a4f78",
}


def test_draws_of_this_rng_version_are_pinned():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(12), rng.integers(15, 60, 12))
    n = labels.size
    groups = [f"g{i}" for i in rng.integers(0, n // 3, n)]
    splits = [["a", "b", "c"][i] for i in rng.integers(0, 3, n)]
    cases = {
        "plain": (None, {"n_way": 4, "k_shot": 2, "n_query": 5, "episodes": 300}, None),
        "rest": (None, {"n_way": "all", "k_shot": 1, "n_query": "rest", "episodes": 50}, None),
        "splits": (splits, {"n_way": 3, "k_shot": 2, "n_query": 4, "episodes": 300,
                            "support_split": ["a", "b"], "query_split": ["b", "c"]}, None),
        "groups": (None, {"n_way": 5, "k_shot": 1, "n_query": 6, "episodes": 300}, groups),
        "groups_rest": (None, {"n_way": 3, "k_shot": 2, "n_query": "rest", "episodes": 100},
                        groups),
    }
    got = {name: sample_episodes(labels, sp, p, 1, spec_hash="s", fingerprint="f",
                                 groups=g).hash for name, (sp, p, g) in cases.items()}
    assert got == _PINNED_HASHES


def test_episode_hash_sees_every_array():
    a = np.arange(6).reshape(2, 3)
    assert episode_hash(a) != episode_hash(a.reshape(3, 2))
    assert episode_hash(a, a) != episode_hash(a)
    assert episode_hash(a.astype(np.int32)) == episode_hash(a)


# ------------------------------------------------------------------------------------ structure
def _check_structure(ep, labels):
    e, n, k = ep.support_idx.shape
    q = ep.n_query
    assert ep.query_idx.shape == ep.query_mask.shape == (e, n * q)
    for i in range(e):
        cls = ep.classes[i]
        assert len(set(cls.tolist())) == n                        # classes without replacement
        sup = ep.support_idx[i]
        qry = ep.query_idx[i][ep.query_mask[i]]
        assert np.all(ep.query_idx[i][~ep.query_mask[i]] == -1)
        used = np.concatenate([sup.ravel(), qry])
        assert len(set(used.tolist())) == used.size                # support/query disjoint
        np.testing.assert_array_equal(labels[sup], np.repeat(cls[:, None], k, 1))
        way = ep.query_way[ep.query_mask[i]]
        np.testing.assert_array_equal(labels[qry], cls[way])


def test_structure_fixed_queries():
    labels = _labels([12, 9, 15, 10, 11, 8, 30])
    ep = _episodes(labels)
    _check_structure(ep, labels)
    assert ep.query_mask.all() and ep.support_idx.shape == (300, 5, 2)


def test_structure_rest_and_all_ways():
    labels = _labels([12, 9, 15, 10, 11, 8, 30])
    ep = _episodes(labels, {"n_way": "all", "k_shot": 3, "n_query": "rest", "episodes": 40})
    _check_structure(ep, labels)
    assert ep.n_way == 7 and ep.n_query == 30 - 3
    # rest: every clip of the episode's classes is either support or query
    for i in range(ep.n_episodes):
        used = np.concatenate([ep.support_idx[i].ravel(), ep.query_idx[i][ep.query_mask[i]]])
        assert sorted(used.tolist()) == list(range(labels.size))
    assert any("rest" in n for n in ep.notes)


def test_split_constraints():
    rng = np.random.default_rng(0)
    labels = _labels([20] * 6)
    splits = rng.choice(["a", "b", "c"], labels.size).tolist()
    params = {**BASE, "n_way": 4, "k_shot": 2, "n_query": 2, "support_split": ["a", "b"],
              "query_split": ["b", "c"]}
    ep = sample_episodes(labels, splits, params, 3)
    _check_structure(ep, labels)
    sp = np.array(splits)
    assert set(sp[ep.support_idx.ravel()]) <= {"a", "b"}
    assert set(sp[ep.query_idx[ep.query_mask]]) <= {"b", "c"}
    # both "b" clips and "c" clips reach the queries, "a" and "b" the support
    assert {"b", "c"} <= set(sp[ep.query_idx[ep.query_mask]])
    rest = sample_episodes(labels, splits, {**params, "n_query": "rest"}, 3)
    _check_structure(rest, labels)
    for i in range(rest.n_episodes):          # rest = every eligible, unused clip of the class
        qry = set(rest.query_idx[i][rest.query_mask[i]].tolist())
        want = {j for j in np.flatnonzero(np.isin(labels, rest.classes[i]) & np.isin(sp, ["b", "c"]))
                if j not in set(rest.support_idx[i].ravel().tolist())}
        assert qry == want


def test_class_pool_restricts_classes():
    labels = _labels([10] * 8)
    names = [f"c{i}" for i in range(8)]
    ep = sample_episodes(labels, None, {**BASE, "n_way": 3, "class_pool": ["c1", "c4", "c6", "c7"]},
                         0, classes=names)
    assert set(ep.classes.ravel().tolist()) == {1, 4, 6, 7}
    with pytest.raises(UsageError, match="unknown classes"):
        sample_episodes(labels, None, {**BASE, "class_pool": ["zz"]}, 0, classes=names)


def test_small_classes_error_lists_them_or_are_excluded():
    labels = _labels([12, 5, 15, 3, 11, 10, 9])
    names = ["dog", "cat", "rain", "owl", "sea", "car", "bus"]
    with pytest.raises(AscBenchError) as err:
        sample_episodes(labels, None, BASE, 0, classes=names)
    assert "cat (5)" in str(err.value) and "owl (3)" in str(err.value)
    assert "exclude_small_classes" in str(err.value)
    ep = sample_episodes(labels, None, {**BASE, "exclude_small_classes": True}, 0, classes=names)
    assert ep.excluded_classes == ["cat", "owl"]
    assert any("excluded 2 class(es)" in n and "cat, owl" in n for n in ep.notes)
    assert not set(ep.classes.ravel().tolist()) & {1, 3}
    with pytest.raises(AscBenchError, match="Lower n_way"):
        sample_episodes(labels, None, {**BASE, "n_way": 6, "exclude_small_classes": True}, 0)


def test_bad_params_are_usage_errors():
    labels = _labels([10] * 6)
    for bad in ({**BASE, "n_way": 1}, {**BASE, "k_shot": 0}, {**BASE, "n_query": "some"},
                {k: v for k, v in BASE.items() if k != "episodes"}):
        with pytest.raises(UsageError):
            sample_episodes(labels, None, bad, 0)


def test_sampling_is_uniform_enough():
    # fixed seed, so this is deterministic: class and clip frequencies pass a chi-square test
    labels = _labels([10] * 8)
    ep = _episodes(labels, {"n_way": 3, "k_shot": 1, "n_query": 2, "episodes": 4000})
    cls_counts = np.bincount(ep.classes.ravel(), minlength=8)
    assert sps.chisquare(cls_counts).pvalue > 1e-3
    sup_counts = np.bincount(ep.support_idx.ravel(), minlength=80)
    assert sps.chisquare(sup_counts).pvalue > 1e-3
    pos = Counter(ep.classes[:, 0].tolist())      # the first way is any class, not the smallest
    assert len(pos) == 8


def test_one_episode_blocks_still_give_valid_episodes(monkeypatch):
    # The block size is a fixed function of (N, class sizes), never of the machine; a different
    # block size consumes the stream differently, so only validity is checked here.
    import asc_bench.evaluation.episodes as mod
    labels = _labels([12, 9, 15, 10, 11, 8, 30])
    whole = _episodes(labels)
    monkeypatch.setattr(mod, "_BLOCK_ELEMENTS", 1)
    blocked = _episodes(labels)
    _check_structure(blocked, labels)
    assert blocked.support_idx.shape == whole.support_idx.shape


# ----------------------------------------------------------------------------- prototype scorer
def _naive_accuracy(x, ep):
    x = x.astype(np.float64)
    out = []
    for i in range(ep.n_episodes):
        protos = x[ep.support_idx[i]].mean(axis=1)
        m = ep.query_mask[i]
        q = x[ep.query_idx[i][m]]
        dist = ((q[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
        out.append(np.mean(dist.argmin(1) == ep.query_way[m]))
    return np.array(out)


@pytest.mark.parametrize("params", [
    {"n_way": 5, "k_shot": 1, "n_query": 6, "episodes": 200},
    {"n_way": 4, "k_shot": 3, "n_query": 5, "episodes": 150},
    {"n_way": "all", "k_shot": 2, "n_query": "rest", "episodes": 30},
])
@pytest.mark.parametrize("method", ["gram", "direct"])
def test_vectorised_scorer_equals_naive(params, method):
    rng = np.random.default_rng(11)
    labels = _labels([14, 9, 20, 12, 10, 16, 11])
    centres = rng.normal(size=(7, 24)) * 0.8
    x = (centres[labels] + rng.normal(size=(labels.size, 24)) + 5.0).astype(np.float32)
    ep = _episodes(labels, params, seed=4)
    ours = prototype.prototype_accuracy(x, ep, method=method)
    naive = _naive_accuracy(x, ep)
    np.testing.assert_array_equal(ours, naive)
    assert 0.2 < naive.mean() < 1.0              # not trivially all right or all wrong


def test_scorer_threads_and_chunks_do_not_change_predictions(monkeypatch):
    rng = np.random.default_rng(2)
    labels = _labels([12] * 9)
    x = rng.normal(size=(labels.size, 16)).astype(np.float32)
    ep = _episodes(labels, {"n_way": 4, "k_shot": 2, "n_query": 5, "episodes": 1500})
    one = prototype.prototype_predictions(x, ep, threads=1)
    np.testing.assert_array_equal(prototype.prototype_predictions(x, ep, threads=3), one)
    monkeypatch.setattr(prototype, "_CHUNK_ELEMENTS", 1000)
    np.testing.assert_array_equal(prototype.prototype_predictions(x, ep, threads=2), one)


def test_auto_method_picks_gram_for_many_episodes_and_direct_for_many_clips():
    small = _episodes(_labels([40] * 50), {"n_way": 5, "k_shot": 1, "n_query": 15,
                                           "episodes": 2000})
    assert prototype.choose_method(2000, small) == "gram"
    assert prototype.choose_method(9400, small) == "direct"
    assert prototype.choose_method(prototype.GRAM_MAX_CLIPS + 1, small) == "direct"


def test_tied_prototypes_pick_the_lowest_way():
    # two identical classes: every query is equidistant to both prototypes
    x = np.tile(np.array([[1.0, 2.0, 3.0]], np.float32), (8, 1))
    labels = _labels([4, 4])
    ep = _episodes(labels, {"n_way": 2, "k_shot": 1, "n_query": 3, "episodes": 5})
    pred = prototype.prototype_predictions(x, ep)
    assert np.all(pred == 0)
    np.testing.assert_array_equal(prototype.prototype_accuracy(x, ep), np.full(5, 0.5))


def _data(x, labels, splits=None):
    n = labels.size
    return EvalData(np.asarray(x, np.float32), labels, [f"c{i}" for i in range(labels.max() + 1)],
                    list(splits) if splits is not None else [None] * n, [{}] * n)


def test_prototype_protocol_pairs_across_encoders():
    rng = np.random.default_rng(0)
    labels = _labels([10] * 6)
    p = {**BASE, "_spec_hash": "h", "_fingerprint": "f"}
    r1 = prototype.run(_data(rng.normal(size=(60, 8)), labels), p, 0)
    r2 = prototype.run(_data(rng.normal(size=(60, 16)), labels), p, 0)
    assert r1.episode_hash == r2.episode_hash and r1.scores.shape == (300,)
    assert not np.array_equal(r1.scores, r2.scores)
    assert "_spec_hash" not in r1.params and r1.unit == "episode"
    assert prototype.run(_data(rng.normal(size=(60, 8)), labels), p, 1).episode_hash != r1.episode_hash
    with pytest.raises(UsageError, match="n_shot"):
        prototype.run(_data(rng.normal(size=(60, 8)), labels), {**p, "n_shot": 1}, 0)


# ------------------------------------------------------------------------------ other protocols
def _blobs(n_classes=4, per=12, dim=10, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = _labels([per] * n_classes)
    centres = rng.normal(size=(n_classes, dim)) * sep
    x = centres[labels] + rng.normal(size=(labels.size, dim))
    splits = [f"fold{i % 4 + 1}" for i in range(labels.size)]
    return x, labels, splits


def test_protocols_separate_separable_data_and_fail_on_noise():
    x, labels, splits = _blobs()
    noise = np.random.default_rng(9).normal(size=x.shape)
    for mod, params in ((logistic, {"k_shot": 2, "draws": 3}), (linear_probe, {"Cs": [0.1, 1]}),
                        (knn, {"k": 3})):
        good = mod.run(_data(x, labels, splits), params, 0)
        bad = mod.run(_data(noise, labels, splits), params, 0)
        assert np.all(good.scores == 1.0), mod.__name__
        assert bad.scores.mean() < 0.6, mod.__name__
        assert good.episode_hash == bad.episode_hash
        if mod is logistic:       # a clip is tested in many draws: outcome, no McNemar predictions
            assert good.predictions is None and good.outcome.correct[good.outcome.query >= 0].all()
            continue
        pred = good.predictions
        assert pred["correct"].all() and np.all(np.diff(pred["index"]) > 0)
        assert good.fold_sizes["n_test"] == [int(np.sum(np.array(splits) == s))
                                             for s in sorted(set(splits))]


def test_logistic_draws_and_per_draw_outcome():
    x, labels, splits = _blobs(per=8)
    r = logistic.run(_data(x, labels), {"k_shot": 3, "draws": 4, "C": 2.0}, 5)
    assert r.scores.shape == (4,) and r.params["C"] == 2.0
    # every draw: 3 training clips per class, all other clips tested; scores = outcome accuracy
    out = r.outcome
    assert out.support.shape == (4, 3 * 4) and np.all((out.query >= 0).sum(1) == labels.size - 12)
    np.testing.assert_allclose(out.correct.sum(1) / (out.query >= 0).sum(1), r.scores)
    assert r.predictions is None
    with pytest.raises(UsageError):
        logistic.run(_data(x, labels), {"k_shot": 3, "draws": 2, "bogus": 1}, 0)


def test_linear_probe_folds_and_train_test_split():
    x, labels, splits = _blobs()
    r = linear_probe.run(_data(x, labels, splits), {"Cs": [1.0]}, 0)
    assert r.unit == "fold" and r.scores.shape == (4,)
    np.testing.assert_array_equal(r.predictions["index"], np.arange(labels.size))
    tt = linear_probe.run(_data(x, labels, splits),
                          {"Cs": [1.0], "folds": {"train": ["fold1", "fold2"], "test": ["fold3"]}}, 0)
    assert tt.scores.shape == (1,)
    assert set(np.array(splits)[tt.predictions["index"]]) == {"fold3"}
    with pytest.raises(AscBenchError, match="split"):
        linear_probe.run(_data(x, labels), {}, 0)


def test_standardiser_is_fitted_on_training_clips_only():
    x, labels, _ = _blobs(per=12)
    train = np.arange(0, 48, 2)
    fit = linear_probe.fit_probe(x[train], labels[train], Cs=[0.1, 1.0], inner_folds=3)
    scaler = fit.model.scaler
    np.testing.assert_allclose(scaler.mean, x[train].mean(0), atol=1e-12)
    assert not np.allclose(scaler.mean, x.mean(0), atol=1e-6)


def test_test_clips_do_not_influence_each_other():
    # With leakage (scaler or C fitted on all clips) shifting one test clip would move the others.
    x, labels, splits = _blobs(sep=0.8, seed=3)
    base = linear_probe.run(_data(x, labels, splits), {"Cs": [0.01, 1, 100]}, 0)
    x2 = x.copy()
    victim = next(i for i in range(labels.size) if splits[i] == "fold2")
    x2[victim] += 1e4
    moved = linear_probe.run(_data(x2, labels, splits), {"Cs": [0.01, 1, 100]}, 0)
    same_fold = [i for i in range(labels.size) if splits[i] == "fold2" and i != victim]
    np.testing.assert_array_equal(base.predictions["correct"][same_fold],
                                  moved.predictions["correct"][same_fold])


def test_knn_weighting_and_ties():
    tr = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    y = np.array([0, 0, 1])
    te = np.array([[0.2, 1.0]])
    assert knn.knn_predict(tr, y, te, k=3, weighting="uniform")[0] == 0     # 2 votes vs 1
    assert knn.knn_predict(tr, y, te, k=3, weighting="exp", temperature=0.05)[0] == 1
    assert knn.knn_predict(tr, y, te, k=1)[0] == 1
    # the neighbour set equals a stable full sort's, ties at the k-th similarity included
    rng = np.random.default_rng(4)
    sim = rng.integers(0, 5, (30, 40)).astype(float)
    for k in (1, 3, 7, 40):
        ref = np.sort(np.argsort(-sim, axis=1, kind="stable")[:, :k], axis=1)
        np.testing.assert_array_equal(knn._top_k(sim, k), ref)
    # exact tie in votes -> lowest class index
    assert knn.knn_predict(np.eye(2), np.array([1, 0]), np.array([[1.0, 1.0]]), k=2)[0] == 0


def test_protocol_hook_registers_all_four():
    from asc_bench_plugins import protocols
    got = {}
    protocols.register_protocols(lambda name, run, **meta: got.setdefault(name, meta))
    assert set(got) == {"fewshot-prototype", "fewshot-logistic", "linear-probe", "knn"}
    assert all(callable(meta.get("episodes")) for meta in got.values())   # all can export


# ------------------------------------------------------------------------- group-disjoint episodes
def _speaker_groups(labels, n_groups, seed=0):
    """Groups that span classes (a speaker says many words), a few clips without a group."""
    rng = np.random.default_rng(seed)
    groups = [f"g{rng.integers(0, n_groups)}" for _ in labels]
    for i in rng.choice(labels.size, 5, replace=False):
        groups[i] = None
    return groups


def _leaks(ep, groups):
    g = np.array(["" if x is None else x for x in groups], dtype=object)
    solo = np.array([x is None for x in groups])
    bad = 0
    for i in range(ep.n_episodes):
        sup = ep.support_idx[i].ravel()
        qry = ep.query_idx[i][ep.query_mask[i]]
        taken = set(g[sup[~solo[sup]]].tolist())
        bad += any(x in taken for x in g[qry[~solo[qry]]].tolist())
    return bad


@pytest.mark.parametrize("params", [
    {"n_way": 3, "k_shot": 2, "n_query": 3, "episodes": 400},
    {"n_way": "all", "k_shot": 1, "n_query": "rest", "episodes": 60},
    {"n_way": 4, "k_shot": 1, "n_query": 2, "episodes": 300, "support_split": ["a", "b"],
     "query_split": ["b", "c"]},
])
def test_group_disjoint_episodes_never_share_a_group(params):
    labels = _labels([20, 16, 24, 18, 20, 22])
    groups = _speaker_groups(labels, 25)
    splits = np.random.default_rng(1).choice(["a", "b", "c"], labels.size).tolist()
    ep = sample_episodes(labels, splits, params, 0, groups=groups)
    _check_structure(ep, labels)
    assert ep.group_disjoint and any("group-disjoint" in n for n in ep.notes)
    assert _leaks(ep, groups) == 0
    # the same draw without the policy leaks: the check above can fail
    loose = sample_episodes(labels, splits, {**params, "group_disjoint": False}, 0, groups=groups)
    assert not loose.group_disjoint and _leaks(loose, groups) > 0


def test_group_disjoint_rest_takes_every_clip_outside_the_support_groups():
    labels = _labels([15, 12, 18, 10])
    groups = _speaker_groups(labels, 12, seed=3)
    ep = sample_episodes(labels, None, {"n_way": 3, "k_shot": 1, "n_query": "rest", "episodes": 50},
                         0, groups=groups)
    g = np.array([f"solo{i}" if x is None else x for i, x in enumerate(groups)])
    for i in range(ep.n_episodes):
        taken = set(g[ep.support_idx[i].ravel()].tolist())
        want = {j for j in np.flatnonzero(np.isin(labels, ep.classes[i])) if g[j] not in taken}
        assert set(ep.query_idx[i][ep.query_mask[i]].tolist()) == want


def test_group_disjoint_support_is_uniform_among_draws_that_leave_the_queries():
    # class 0: 8 clips in 4 recordings of 2; 3 shots + 3 queries. A 3-shot support spanning 3
    # recordings leaves 2 queries, so only supports from 2 recordings are valid: 4C2 * 4 = 24 sets.
    import itertools
    labels = _labels([8, 12])
    groups = [f"r{i // 2}" for i in range(8)] + [None] * 12
    params = {"n_way": 2, "k_shot": 3, "n_query": 3, "episodes": 6000}
    ep = sample_episodes(labels, None, params, 0, groups=groups)
    assert _leaks(ep, groups) == 0
    way0 = np.where(ep.classes[:, :1] == 0, ep.support_idx[:, 0], ep.support_idx[:, 1])
    seen = Counter(tuple(sorted(s)) for s in way0.tolist())
    valid = [s for s in itertools.combinations(range(8), 3) if len({i // 2 for i in s}) == 2]
    assert set(seen) == set(valid) and len(valid) == 24
    assert sps.chisquare([seen[s] for s in valid]).pvalue > 1e-3
    # queries: uniform over the 4 clips the support leaves (each pair of 3 among 4 equally often)
    assert ep.query_mask.all()


def test_group_policy_auto_explicit_and_opt_out():
    labels = _labels([12, 9, 15, 10, 11, 8, 30])
    groups = [f"g{i % 17}" for i in range(labels.size)]
    auto = _episodes(labels, groups=groups)
    on = _episodes(labels, {**BASE, "group_disjoint": True}, groups=groups)
    off = _episodes(labels, {**BASE, "group_disjoint": False}, groups=groups)
    plain = _episodes(labels, {**BASE, "group_disjoint": False})
    assert auto.group_disjoint and auto.hash == on.hash
    assert not off.group_disjoint and off.hash == plain.hash != auto.hash
    assert not _episodes(labels).group_disjoint          # no groups: the policy is off
    with pytest.raises(UsageError, match="defines no groups"):
        _episodes(labels, {**BASE, "group_disjoint": True})
    with pytest.raises(UsageError, match="group_disjoint"):
        _episodes(labels, {**BASE, "group_disjoint": "yes"}, groups=groups)


def test_group_disjoint_episodes_are_deterministic_and_block_independent_valid(monkeypatch):
    import asc_bench.evaluation.episodes as mod
    labels = _labels([20, 16, 24, 18, 20, 22])
    groups = _speaker_groups(labels, 25)
    a = _episodes(labels, groups=groups, spec_hash="s", fingerprint="f")
    b = _episodes(labels, groups=list(groups), spec_hash="s", fingerprint="f")
    assert a.hash == b.hash
    monkeypatch.setattr(mod, "_BLOCK_ELEMENTS", 1)
    small = _episodes(labels, groups=groups)
    _check_structure(small, labels)
    assert _leaks(small, groups) == 0


def test_classes_that_cannot_be_group_disjoint_are_reported_before_sampling():
    from asc_bench.evaluation.episodes import check_episode_classes
    labels = _labels([10, 10, 10, 10])
    names = ["one_rec", "two_recs", "many", "many2"]
    groups = (["a"] * 10 + ["b"] * 5 + ["c"] * 5 + [f"m{i}" for i in range(10)]
              + [f"n{i}" for i in range(10)])
    params = {"n_way": 3, "k_shot": 1, "n_query": 5, "episodes": 50}
    # one recording: nothing outside the support's; two of 5: 5 queries are left (ok)
    with pytest.raises(AscBenchError, match=r"one_rec \(10 clips in 1 groups\).*group_disjoint: false"):
        check_episode_classes(labels, None, params, classes=names, groups=groups)
    with pytest.raises(AscBenchError, match="one_rec"):
        sample_episodes(labels, None, params, 0, classes=names, groups=groups)
    excl = {**params, "exclude_small_classes": True}
    assert check_episode_classes(labels, None, excl, classes=names, groups=groups) == ["one_rec"]
    ep = sample_episodes(labels, None, excl, 0, classes=names, groups=groups)
    assert ep.excluded_classes == ["one_rec"] and 0 not in ep.classes
    assert _leaks(ep, groups) == 0
    # six queries: "two_recs" cannot either
    assert check_episode_classes(labels, None, {**excl, "n_query": 6, "n_way": 2}, classes=names,
                                 groups=groups) == ["one_rec", "two_recs"]
    # without groups nothing is excluded
    assert check_episode_classes(labels, None, excl, classes=names) == []


def test_episode_without_a_valid_support_after_the_redraws_is_an_error(monkeypatch):
    import asc_bench.evaluation.episodes as mod
    labels = _labels([8, 12])
    groups = [f"r{i // 2}" for i in range(8)] + [None] * 12
    monkeypatch.setattr(mod, "MAX_SUPPORT_ROUNDS", 1)     # 24 of 56 supports are valid
    with pytest.raises(AscBenchError, match="no group-disjoint support"):
        sample_episodes(labels, None, {"n_way": 2, "k_shot": 3, "n_query": 3, "episodes": 50}, 0,
                        groups=groups)


def test_protocols_state_the_group_policy():
    rng = np.random.default_rng(0)
    labels = _labels([12] * 5)
    groups = [f"rec{i // 3}" for i in range(labels.size)]
    x = rng.standard_normal((labels.size, 8)).astype(np.float32)
    data = EvalData(x, labels, [f"c{i}" for i in range(5)], [None] * labels.size,
                    [{}] * labels.size, groups=groups)
    params = {"n_way": 3, "k_shot": 1, "n_query": 3, "episodes": 20}
    res = prototype.run(data, params, 0)
    assert res.params["group_disjoint"] is True
    units = prototype.episodes(data, params, 0)
    assert len(units) == 20 and all(len(u["support"]) == 3 and len(u["query"]) == 9 for u in units)
    assert prototype.run(data, {**params, "group_disjoint": False}, 0).params["group_disjoint"] is False
    lres = logistic.run(data, {"k_shot": 2, "draws": 3}, 0)
    assert lres.params["group_disjoint"] is True
    draws = logistic.episodes(data, {"k_shot": 2, "draws": 3}, 0)
    g = np.array(groups)
    for u in draws:
        assert not set(g[u["query"]]) & set(g[u["support"]])
        assert len(u["support"]) == 10


def test_class_check_equals_a_brute_force_search_over_the_groups():
    import itertools
    from asc_bench.evaluation.episodes import check_episode_classes
    rng = np.random.default_rng(5)
    for trial in range(40):
        sizes = rng.integers(1, 5, rng.integers(1, 6))            # one class's groups
        k, q = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        labels = np.concatenate([np.zeros(sizes.sum(), int), np.ones(20, int)])
        groups = [f"g{i}" for i, n in enumerate(sizes) for _ in range(n)] + [None] * 20
        feasible = any(sum(sizes[list(c)]) >= k and sizes.sum() - sum(sizes[list(c)]) >= q
                       for r in range(1, len(sizes) + 1) for c in itertools.combinations(range(len(sizes)), r))
        names = ["small", "big"]
        params = {"n_way": 2, "k_shot": k, "n_query": q, "episodes": 5}
        if feasible:
            assert check_episode_classes(labels, None, params, classes=names, groups=groups) == []
            ep = sample_episodes(labels, None, params, trial, classes=names, groups=groups)
            assert _leaks(ep, groups) == 0 and ep.query_mask.all()
        else:
            with pytest.raises(AscBenchError, match="small"):
                check_episode_classes(labels, None, params, classes=names, groups=groups)
