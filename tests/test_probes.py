"""Probes tuned without peeking: C chosen on training/support data only, grouped inner CV, the
logistic solver against scikit-learn, and the protocol parameter tables (CLI, docs, validation)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from asc_bench.api import EvalData, UsageError
from asc_bench_plugins.protocols import knn, linear_probe, logistic, logreg
from asc_bench_plugins.protocols.folds import group_codes, stratified_group_folds
from conftest import cli

REPO = Path(__file__).resolve().parents[1]


def _blobs(n_cls=4, per=30, dim=12, sep=1.0, seed=0, groups_of=None):
    """Gaussian classes; with `groups_of`, clips come in groups of that size sharing an offset."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_cls), per)
    x = rng.normal(size=(n_cls, dim))[labels] * sep + rng.normal(size=(labels.size, dim))
    groups = None
    if groups_of:
        g = np.arange(labels.size) // groups_of
        x += rng.normal(size=(g.max() + 1, dim))[g] * 1.5
        groups = [f"g{v}" for v in g]
    return x.astype(np.float32), labels, groups


def _data(x, labels, splits=None, groups=None):
    data = EvalData(embeddings=x, labels=labels, classes=[f"c{i}" for i in range(labels.max() + 1)],
                    splits=splits or [None] * labels.size, extras=[{} for _ in labels])
    data.groups = groups          # EvalData.groups (the core fills it from Clip.group)
    return data


def _sklearn_lr(x, y, c):
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=c, solver="lbfgs", max_iter=1000).fit(np.asarray(x, np.float64), y)


# ----------------------------------------------------------------------------------- the solver
@pytest.mark.parametrize("n,dim", [(150, 10), (40, 64)])        # n > D, and n < D (span path)
def test_logreg_follows_sklearn_iterations_and_predictions(n, dim):
    x, y, _ = _blobs(n_cls=3, per=n // 3 + 40, dim=dim, sep=0.6, seed=n)
    order = np.random.default_rng(0).permutation(y.size)
    x, y = x[order], y[order]
    xa, ya, xb = x[:n], y[:n], x[n:]
    with logreg.one_blas_thread():
        models = logreg.fit_path(xa, ya, [0.01, 1.0, 100.0], 3, dtype=np.float64)
    for c, m in zip([0.01, 1.0, 100.0], models):
        ref = _sklearn_lr(xa, ya, c)
        assert m.n_iter == ref.n_iter_[0]
        np.testing.assert_array_equal(m.predict(xb), ref.predict(xb))
        np.testing.assert_allclose(m.coef, ref.coef_, atol=1e-5 * max(1.0, np.abs(ref.coef_).max()))


def test_shared_products_fits_stop_where_each_fit_alone_stops():
    # The Cs of a path share each evaluation's products; every fit must still be its own run.
    x, y, _ = _blobs(n_cls=5, per=120, dim=40, sep=0.3, seed=9)
    cs = [0.01, 0.1, 1.0, 10.0, 100.0]
    with logreg.one_blas_thread():
        alone = logreg.fit_path(x, y, cs, 5)
        side = logreg.fit_path(x, y, cs, 5, share_products=True)
    for a, b in zip(alone, side):
        assert a.n_iter == b.n_iter and a.converged == b.converged
        np.testing.assert_array_equal(a.predict(x), b.predict(x))
        np.testing.assert_allclose(a.coef, b.coef, rtol=1e-5, atol=1e-6)


def _scipy_minimize_fits(monkeypatch, *args, **kw):
    """fit_path through scipy.optimize.minimize itself (what it does where scipy lacks setulb)."""
    with monkeypatch.context() as m:
        m.setattr(logreg, "_setulb", lambda: None)
        return logreg.fit_path(*args, **kw)


@pytest.mark.parametrize("n,dim", [(300, 20), (30, 64)])        # n > D, and n < D (span path)
def test_side_by_side_driver_is_scipys_minimize_bit_for_bit(monkeypatch, n, dim):
    # The driver steps scipy's private L-BFGS-B routine itself: it must reproduce
    # scipy.optimize.minimize exactly, or scipy's interface changed.
    x, y, _ = _blobs(n_cls=4, per=n // 4, dim=dim, sep=0.4, seed=n)
    cs = [0.01, 1.0, 100.0]
    with logreg.one_blas_thread():
        ours = logreg.fit_path(x, y, cs, 4)
        ref = _scipy_minimize_fits(monkeypatch, x, y, cs, 4)
    for a, b in zip(ours, ref):
        assert a.n_iter == b.n_iter
        np.testing.assert_array_equal(a.coef, b.coef)
        np.testing.assert_array_equal(a.intercept, b.intercept)


def test_side_by_side_driver_stops_at_max_iter_like_scipy(monkeypatch):
    x, y, _ = _blobs(n_cls=3, per=40, dim=10, sep=0.2, seed=2)
    ours = logreg.fit_path(x, y, [100.0, 1.0], 3, max_iter=3)
    ref = _scipy_minimize_fits(monkeypatch, x, y, [100.0, 1.0], 3, max_iter=3)
    assert [m.n_iter for m in ours] == [m.n_iter for m in ref] == [3, 3]
    assert not any(m.converged for m in ours)
    np.testing.assert_array_equal(ours[0].coef, ref[0].coef)


def test_one_blas_thread_limits_scipys_blas_loaded_inside_the_block():
    # scipy's OpenBLAS is loaded by the first fit; it once kept its default threads (4x slower).
    code = ("from asc_bench_plugins.protocols import logreg\n"
            "from threadpoolctl import threadpool_info\n"
            "with logreg.one_blas_thread():\n"
            "    import scipy.optimize\n"
            "    libs = [i for i in threadpool_info() if i['user_api'] == 'blas']\n"
            "    print(len(libs), max(i['num_threads'] for i in libs))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"})
    n_libs, threads = map(int, out.stdout.split())
    assert n_libs >= 2 and threads == 1                   # numpy's and scipy's OpenBLAS


def test_fit_probes_do_not_depend_on_threads():
    x, y, groups = _blobs(n_cls=3, per=60, dim=30, sep=0.4, seed=5, groups_of=3)
    codes = group_codes(groups, y.size)
    probs = [linear_probe.ProbeProblem(x[m], y[m], codes[m], 7 + i)
             for i, m in enumerate([np.arange(y.size) % 3 != r for r in range(3)])]
    one = linear_probe.fit_probes(probs, Cs=[0.01, 1.0, 100.0], threads=1)
    two = linear_probe.fit_probes(probs, Cs=[0.01, 1.0, 100.0], threads=2)
    for a, b in zip(one, two):
        assert (a.C, a.inner_scores, a.n_unconverged) == (b.C, b.inner_scores, b.n_unconverged)
        np.testing.assert_array_equal(a.model.logreg.coef, b.model.logreg.coef)


def test_standardiser_is_sklearns():
    from sklearn.preprocessing import StandardScaler

    x, _, _ = _blobs()
    x[:, 3] = 2.5                                                        # constant feature
    ref = StandardScaler().fit(x.astype(np.float64))
    sc = logreg.Standardiser.fit(x)
    np.testing.assert_allclose(sc.mean, ref.mean_, rtol=1e-6)
    np.testing.assert_allclose(sc.scale, ref.scale_, rtol=1e-6)


# ------------------------------------------------------------------------------------ linear-probe
def test_linear_probe_chooses_gridsearchcv_c_and_predictions_on_the_same_splits():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.linear_model import LogisticRegression

    x, y, _ = _blobs(n_cls=3, per=50, dim=20, sep=0.35, seed=4)
    train = np.flatnonzero(np.arange(150) % 4 != 0)
    test = np.flatnonzero(np.arange(150) % 4 == 0)
    cs = [0.001, 0.01, 0.1, 1.0, 10.0]
    splits = linear_probe.inner_splits(y[train], None, 3, 11)
    fit = linear_probe.fit_probe(x[train], y[train], Cs=cs, inner_folds=3, random_state=11)
    pipe = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(max_iter=1000))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = GridSearchCV(pipe, {"lr__C": cs}, cv=splits).fit(x[train].astype(np.float64), y[train])
    assert fit.C == ref.best_params_["lr__C"]
    np.testing.assert_allclose(fit.inner_scores, ref.cv_results_["mean_test_score"], atol=1e-12)
    np.testing.assert_array_equal(fit.model.predict(x[test]), ref.predict(x[test].astype(np.float64)))


def test_stratified_group_folds_keep_groups_whole_and_classes_spread():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 60, 400)
    y = groups % 4                                     # groups nested in classes
    folds = stratified_group_folds(y, groups, 3, seed=5)
    assert sorted(np.concatenate([b for _, b in folds]).tolist()) == list(range(400))
    biggest = np.bincount(groups).max()
    for a, b in folds:
        assert not set(groups[a]) & set(groups[b])
    per_fold = np.array([np.bincount(y[b], minlength=4) for _, b in folds])     # [fold, class]
    assert (per_fold.max(0) - per_fold.min(0)).max() <= biggest
    again = stratified_group_folds(y, groups, 3, seed=5)
    assert all(np.array_equal(p[1], q[1]) for p, q in zip(folds, again))


def test_linear_probe_inner_cv_is_grouped_when_the_dataset_has_groups():
    x, y, groups = _blobs(n_cls=3, per=40, groups_of=4, seed=2)
    splits = [f"fold{i % 3 + 1}" for i in np.arange(y.size) // 4]      # outer folds keep groups
    codes = group_codes(groups, y.size)
    train = np.flatnonzero(np.array(splits) != "fold1")
    for a, b in linear_probe.inner_splits(y[train], codes[train], 3, 0):
        assert not set(codes[train][a]) & set(codes[train][b])
    r = linear_probe.run(_data(x, y, splits, groups), {"Cs": [0.1, 1, 10]}, 0)
    assert r.details["inner_cv_grouped"] is True
    assert all("grouped" in s for s in r.details["inner_cv"])
    assert len(r.details["chosen_C"]) == 3 and set(r.details["chosen_C"]) <= {0.1, 1.0, 10.0}
    plain = linear_probe.run(_data(x, y, splits), {"Cs": [0.1, 1, 10]}, 0)
    assert plain.details["inner_cv_grouped"] is False
    assert not any("grouped" in s for s in plain.details["inner_cv"])


def test_linear_probe_selection_ignores_test_clips():
    # Shuffling the test clips' labels cannot change the chosen C (only the score).
    x, y, _ = _blobs(n_cls=3, per=30, sep=0.4, seed=7)
    splits = [f"fold{i % 3 + 1}" for i in range(y.size)]
    base = linear_probe.run(_data(x, y, splits), {"Cs": [0.01, 0.1, 1, 10]}, 0)
    test = np.flatnonzero(np.array(splits) == "fold2")
    y2 = y.copy()
    y2[test] = np.random.default_rng(1).permutation(y[test])
    moved = linear_probe.run(_data(x, y2, splits), {"Cs": [0.01, 0.1, 1, 10]}, 0)
    names = ["fold1", "fold2", "fold3"]
    assert base.details["chosen_C"][names.index("fold2")] == moved.details["chosen_C"][names.index("fold2")]


# -------------------------------------------------------------------------------- fewshot-logistic
def test_fewshot_logistic_c_auto_is_the_default_and_recorded_per_draw():
    x, y, _ = _blobs(n_cls=4, per=12, sep=0.8, seed=3)
    r = logistic.run(_data(x, y), {"k_shot": 3, "draws": 5}, 0)
    assert r.params["C"] == "auto" and r.params["Cs"] == list(logistic.DEFAULT_CS)
    assert len(r.details["chosen_C"]) == 5
    assert set(r.details["chosen_C"]) <= set(logistic.DEFAULT_CS)
    assert "3-fold stratified CV on the support" in r.details["C_selection"]
    again = logistic.run(_data(x, y), {"k_shot": 3, "draws": 5}, 0)
    assert again.details == r.details and np.array_equal(again.scores, r.scores)


def test_permuting_query_labels_leaves_every_chosen_c_unchanged(monkeypatch):
    x, y, groups = _blobs(n_cls=4, per=14, sep=0.5, seed=8, groups_of=2)
    calls = []
    real = logistic.fit_draw

    def spy(xx, yy, support, query, **kw):
        out = real(xx, yy, support, query, **kw)
        calls.append((xx, yy, support, query, kw, out))
        return out

    monkeypatch.setattr(logistic, "fit_draw", spy)
    r = logistic.run(_data(x, y, groups=groups), {"k_shot": 4, "draws": 6}, 1)
    assert [c[-1].C for c in calls] == r.details["chosen_C"]
    assert "grouped" in r.details["C_selection"]
    rng = np.random.default_rng(0)
    changed = 0
    for xx, yy, support, query, kw, out in calls:
        y_perm = yy.copy()
        y_perm[query] = rng.permutation(yy[query])
        again = real(xx, y_perm, support, query, **kw)
        assert again.C == out.C and again.cv_accuracy == out.cv_accuracy
        changed += not np.array_equal(again.correct, out.correct)
    assert changed > 0                           # the permutation did reach the scoring


def test_fewshot_logistic_with_one_shot_uses_the_middle_of_the_grid():
    x, y, _ = _blobs(n_cls=4, per=6, seed=1)
    r = logistic.run(_data(x, y), {"k_shot": 1, "draws": 3, "Cs": [0.5, 5, 50]}, 0)
    assert r.details["chosen_C"] == [5.0, 5.0, 5.0]
    assert any("K = 1" in n for n in r.notes) and "K = 1" in r.details["C_selection"]


def test_fewshot_logistic_numeric_c_equals_sklearn():
    x, y, _ = _blobs(n_cls=3, per=10, sep=0.7, seed=5)
    r = logistic.run(_data(x, y), {"k_shot": 3, "draws": 2, "C": 2.0}, 0)
    assert r.params["C"] == 2.0 and r.details["chosen_C"] == [2.0, 2.0]
    xn = logistic.l2_normalise(x)
    for d in range(2):                      # every draw, from the per-draw outcome
        train = r.outcome.support[d]
        rows = r.outcome.query[d] >= 0
        test = r.outcome.query[d][rows]
        ref = _sklearn_lr(xn[train], y[train], 2.0)
        np.testing.assert_array_equal(ref.predict(xn[test]) == y[test], r.outcome.correct[d][rows])


def test_fewshot_logistic_bad_c_and_grid_are_usage_errors():
    x, y, _ = _blobs(n_cls=3, per=6)
    for bad in ({"C": "best"}, {"C": -1}, {"Cs": []}, {"Cs": [0, 1]}, {"inner_folds": 1}):
        with pytest.raises(UsageError):
            logistic.run(_data(x, y), {"k_shot": 2, "draws": 1, **bad}, 0)


# ----------------------------------------------------------------------------- parameter tables
def _tables():
    from asc_bench_plugins import protocols
    got = {}
    protocols.register_protocols(lambda name, run, params=(), **meta: got.setdefault(name, params))
    return got


def test_every_builtin_protocol_declares_its_params_and_rejects_others_by_name():
    tables = _tables()
    assert set(tables) == {"fewshot-prototype", "fewshot-logistic", "linear-probe", "knn"}
    x, y, _ = _blobs(n_cls=3, per=8)
    splits = [f"fold{i % 2 + 1}" for i in range(y.size)]
    for mod, name, ok in ((logistic, "fewshot-logistic", {"k_shot": 2, "draws": 1}),
                          (linear_probe, "linear-probe", {}), (knn, "knn", {})):
        assert all(p.meaning for p in tables[name])
        with pytest.raises(UsageError) as err:
            mod.run(_data(x, y, splits), {**ok, "bogus": 1}, 0)
        msg = str(err.value)
        assert "bogus" in msg and all(p.name in msg for p in tables[name])


def test_prototype_table_matches_the_sampler_keys():
    from asc_bench.evaluation.episodes import SAMPLING_KEYS
    names = {p.name for p in _tables()["fewshot-prototype"]}
    assert set(SAMPLING_KEYS) <= names and names - set(SAMPLING_KEYS) <= {"group_disjoint"}


def test_docs_protocols_md_documents_every_param_with_its_default():
    text = (REPO / "docs" / "protocols.md").read_text()
    for proto, table in _tables().items():
        section = text.split(f"## `{proto}`", 1)[1].split("\n## ", 1)[0]
        for p in table:
            row = next((line for line in section.splitlines() if line.startswith(f"| `{p.name}` |")),
                       None)
            assert row is not None, f"docs/protocols.md: {proto} lacks a row for {p.name}"
            default = "required" if p.required else (
                p.default if isinstance(p.default, str) else json.dumps(p.default))
            assert default in row, f"docs/protocols.md: {proto}.{p.name} default {default!r}"


def test_list_protocols_shows_the_params():
    rows = {r["name"]: r for r in json.loads(cli("list", "protocols", "--json").stdout)}
    lp = {p["name"]: p for p in rows["linear-probe"]["params"]}
    assert lp["inner_folds"]["default"] == 3 and lp["Cs"]["meaning"]
    fl = {p["name"]: p for p in rows["fewshot-logistic"]["params"]}
    assert fl["C"]["default"] == "auto" and fl["k_shot"]["required"] is True
    table = cli("list", "protocols").stdout
    assert re.search(r"inner_folds\s*=\s*3", table)


def test_unknown_param_fails_before_embedding(demo_root, dirs):
    proc = cli("run", "--encoder", "logmel-stats", "--task", "demo-5way1shot", "--data-root",
               str(demo_root), "--cache-dir", str(dirs["cache"]), "--results-dir", str(dirs["results"]),
               "--param", "epsiodes=10", check=False)
    assert proc.returncode == 2 and "epsiodes" in proc.stderr and "episodes" in proc.stderr
    assert not dirs["cache"].exists() or not any(dirs["cache"].rglob("*.npy"))
