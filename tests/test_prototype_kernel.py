"""fewshot-prototype scoring: the optional numba kernel gives exactly the numpy reference's answers."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from asc_bench.api import AscBenchError
from asc_bench.evaluation.episodes import sample_episodes
from asc_bench_plugins.protocols import prototype


def _labels(counts):
    return np.repeat(np.arange(len(counts)), counts)


def _both(x, ep, **kw):
    ref = prototype.prototype_predictions(x, ep, method="gram", accelerate=False, **kw)
    fast = prototype.prototype_predictions(x, ep, method="gram", accelerate=True, **kw)
    return ref, fast


needs_numba = pytest.mark.skipif(prototype.numba_kernel() is None,
                                 reason="numba is not installed (pip install 'asc-bench[fast]')")


@needs_numba
@pytest.mark.parametrize("k_shot", [1, 2, 3, 5])
def test_numba_kernel_equals_numpy_on_random_data(k_shot):
    rng = np.random.default_rng(k_shot)
    labels = _labels([20, 14, 25, 18, 16, 30, 19, 22])
    centres = rng.normal(size=(8, 32)) * 0.6
    # a large common offset and a wide spread of norms exercise the float32 Gram rounding
    x = (centres[labels] + rng.normal(size=(labels.size, 32)) * rng.uniform(0.2, 3, (labels.size, 1))
         + 50.0).astype(np.float32)
    ep = sample_episodes(labels, None, {"n_way": 5, "k_shot": k_shot, "n_query": 6,
                                        "episodes": 700}, 3)
    ref, fast = _both(x, ep)
    np.testing.assert_array_equal(fast, ref)
    assert 0.2 < np.mean(ref == ep.query_way) < 1.0


@needs_numba
@pytest.mark.parametrize("k_shot", [1, 2])
def test_numba_kernel_equals_numpy_with_padded_queries(k_shot):
    rng = np.random.default_rng(7)
    labels = _labels([9, 15, 6, 12, 20, 7])
    x = rng.normal(size=(labels.size, 12)).astype(np.float32)
    ep = sample_episodes(labels, None, {"n_way": "all", "k_shot": k_shot, "n_query": "rest",
                                        "episodes": 400}, 1)
    assert not ep.query_mask.all()
    ref, fast = _both(x, ep)
    np.testing.assert_array_equal(fast, ref)          # padded columns too (both read row 0)
    correct = prototype.prototype_correct(x, ep, accelerate=True)
    np.testing.assert_array_equal(correct,
                                  prototype.prototype_correct(x, ep, accelerate=False))
    assert not correct[~ep.query_mask].any()


@needs_numba
@pytest.mark.parametrize("k_shot", [1, 3])
def test_numba_kernel_breaks_exact_ties_like_numpy(k_shot):
    # 4 distinct vectors for 60 clips: duplicate support clips and equidistant prototypes abound
    rng = np.random.default_rng(5)
    labels = _labels([10] * 6)
    x = rng.normal(size=(4, 8)).astype(np.float32)[rng.integers(0, 4, labels.size)]
    ep = sample_episodes(labels, None, {"n_way": 4, "k_shot": k_shot, "n_query": 5,
                                        "episodes": 600}, 2)
    ref, fast = _both(x, ep)
    np.testing.assert_array_equal(fast, ref)
    # identical classes: every query is equidistant to both prototypes -> the lowest way
    same = np.tile(np.array([[1.0, 2.0, 3.0]], np.float32), (8, 1))
    ep2 = sample_episodes(_labels([4, 4]), None, {"n_way": 2, "k_shot": 1, "n_query": 3,
                                                  "episodes": 5}, 0)
    assert np.all(prototype.prototype_predictions(same, ep2, method="gram", accelerate=True) == 0)


@needs_numba
def test_numba_kernel_does_not_depend_on_threads_or_chunks(monkeypatch):
    rng = np.random.default_rng(2)
    labels = _labels([12] * 9)
    x = rng.normal(size=(labels.size, 16)).astype(np.float32)
    ep = sample_episodes(labels, None, {"n_way": 4, "k_shot": 2, "n_query": 5,
                                        "episodes": 1500}, 0)
    ref = prototype.prototype_predictions(x, ep, method="gram", accelerate=False, threads=1)
    for threads in (1, 2, 3, 8):
        np.testing.assert_array_equal(
            prototype.prototype_predictions(x, ep, method="gram", accelerate=True,
                                            threads=threads), ref)
    monkeypatch.setattr(prototype, "_CHUNK_ELEMENTS", 1000)
    np.testing.assert_array_equal(
        prototype.prototype_predictions(x, ep, method="gram", accelerate=False, threads=3), ref)


def test_numpy_path_without_numba(monkeypatch):
    rng = np.random.default_rng(0)
    labels = _labels([10] * 5)
    x = rng.normal(size=(labels.size, 6)).astype(np.float32)
    ep = sample_episodes(labels, None, {"n_way": 3, "k_shot": 2, "n_query": 4,
                                        "episodes": 50}, 0)
    ref = prototype.prototype_predictions(x, ep, method="gram", accelerate=False)
    monkeypatch.setitem(sys.modules, "numba", None)          # `import numba` now fails
    prototype.numba_kernel.cache_clear()
    try:
        assert prototype.numba_kernel() is None
        np.testing.assert_array_equal(prototype.prototype_predictions(x, ep, method="gram"), ref)
        with pytest.raises(AscBenchError, match="numba"):
            prototype.prototype_predictions(x, ep, method="gram", accelerate=True)
    finally:
        prototype.numba_kernel.cache_clear()


def test_environment_variable_and_job_size_choose_the_kernel(monkeypatch):
    monkeypatch.setenv("ASC_BENCH_NUMBA", "0")
    assert not prototype.use_numba(None, 10 ** 9)
    assert prototype.use_numba(False, 10 ** 9) is False
    assert prototype.use_numba(True, 10) is True                  # explicit beats the variable
    monkeypatch.delenv("ASC_BENCH_NUMBA")
    # small jobs (a 2000-episode 5-way 1-shot task) stay on numpy: loading numba costs more
    assert not prototype.use_numba(None, 2000 * 5 * (15 * 5 + 1))
    installed = prototype.numba_kernel() is not None
    assert prototype.use_numba(None, prototype.NUMBA_MIN_GATHERS) is installed
    monkeypatch.setenv("ASC_BENCH_NUMBA", "1")
    assert prototype.use_numba(None, 10) is installed


def test_cli_startup_does_not_import_numba():
    code = ("import sys\nfrom asc_bench.cli import cli\nimport asc_bench_plugins.protocols.prototype\n"
            "try:\n    cli(['--version'], prog_name='asc-bench')\nexcept SystemExit:\n    pass\n"
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


@needs_numba
def test_numba_kernel_is_compiled_without_reassociation_or_fused_multiply_add():
    # identical answers rely on plain IEEE float64 operations in source order; compiled afresh
    # with the same options (numba cannot inspect code loaded from its on-disk cache)
    import numba
    kernel = numba.njit(nogil=True)(prototype._gram_kernel)
    g = np.zeros(16, np.float32)
    kernel(g, 4, np.zeros((1, 2, 2), np.int64), np.zeros((1, 3), np.int64), 2,
           np.zeros((1, 3), np.int64), 0, 1)
    for sig, ir in kernel.inspect_llvm().items():
        for flag in (" fast ", " contract ", " reassoc ", "llvm.fma", "llvm.fmuladd"):
            assert flag not in ir, (sig, flag)
