"""`--encoder hear:MODULE` with torch, numpy and TensorFlow HEAR-2021 modules; versions recorded."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, run_json

from asc_bench.api import EncoderRequest, UsageError
from asc_bench.embedding.hear import hear_entry, to_torch

MODULES = REPO / "tests" / "hear_modules"
LOCAL = REPO / "tests" / "plugins_local"


def _build(name: str, options=None, checkpoint=None):
    return hear_entry(f"hear:{name}").build(EncoderRequest(checkpoint=checkpoint, random_init=False,
                                                           options=options or {}))


def _waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    wave = np.zeros((len(lengths), max(lengths)), np.float32)
    for i, n in enumerate(lengths):
        wave[i, :n] = rng.standard_normal(n) * 0.1
    return torch.from_numpy(wave), torch.tensor(lengths)


@pytest.fixture
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(MODULES))
    monkeypatch.syspath_prepend(str(LOCAL))


def test_numpy_module_gets_numpy_audio_and_its_arrays_come_back(on_path):
    enc = _build("hear_numpy_toy")
    assert enc.framework == "numpy" and enc.config()["version"] == "0.3.1"   # its __version__ (not installed)
    wave, lengths = _waves([8000, 5000, 8000])
    out = enc(wave, lengths)
    for i, n in enumerate(lengths.tolist()):
        x = wave[i, :n].numpy()
        np.testing.assert_allclose(out[i].numpy(), [x.mean(), x.std(), np.abs(x).max()], rtol=1e-5)


def test_torch_module_still_gets_torch_audio(on_path):
    enc = _build("hear_toy")
    assert enc.framework == "torch" and enc.config()["framework"] == "torch"
    wave, lengths = _waves([4000, 6000])
    torch.testing.assert_close(enc(wave, lengths)[1], torch.stack([wave[1].mean(), wave[1].std(), wave[1].abs().max()]))


def test_results_of_any_framework_become_float32_torch():
    class EagerLike:                       # what TensorFlow returns: no .float(), but .numpy()
        def numpy(self):
            return np.arange(6, dtype=np.float64).reshape(2, 3)

    for value in (EagerLike(), np.arange(6).reshape(2, 3), torch.arange(6.0, dtype=torch.float64).reshape(2, 3)):
        out = to_torch(value)
        assert out.dtype == torch.float32 and out.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_framework_option_and_wrong_shapes_are_usage_errors(on_path):
    with pytest.raises(UsageError, match="framework=jax"):
        _build("hear_numpy_toy", {"framework": "jax"})
    with pytest.raises(UsageError, match="unknown encoder option"):
        _build("hear_numpy_toy", {"layer": "3"})
    enc = _build("hear_numpy_toy")
    enc.embed_dim = 5                       # as if the module declared a wrong scene_embedding_size
    with pytest.raises(UsageError, match="scene_embedding_size"):
        enc(*_waves([4000]))
    # a numpy module handed torch tensors refuses them: the framework really is chosen per module
    with pytest.raises(TypeError, match="numpy audio"):
        _build("hear_numpy_toy", {"framework": "torch"})(*_waves([4000]))


@pytest.mark.slow
def test_tensorflow_module_gets_tf_audio_and_checkpoint_goes_to_load_model(on_path, tmp_path):
    tf = pytest.importorskip("tensorflow")
    import hear_tf_toy

    enc = _build("hear_tf_toy")
    assert enc.framework == "tensorflow" and enc.num_parameters() == hear_tf_toy.BANDS * 4
    wave, lengths = _waves([8000, 6000, 8000])
    out = enc(wave, lengths)                 # was: AttributeError: 'EagerTensor' object has no attribute 'float'
    expected = hear_tf_toy.get_scene_embeddings(tf.constant(wave[1:2, :6000].numpy()), hear_tf_toy.load_model())
    torch.testing.assert_close(out[1:2], torch.from_numpy(expected.numpy()))
    ckpt = tmp_path / "projection.npz"
    np.savez(ckpt, projection=np.ones((hear_tf_toy.BANDS, 4), np.float32))
    loaded = _build("hear_tf_toy", checkpoint=ckpt)
    torch.testing.assert_close(loaded(wave, lengths)[:, 0], loaded(wave, lengths)[:, 3])   # all-ones projection
    assert not torch.allclose(loaded(wave, lengths), out)


@pytest.fixture(scope="module")
def installed_toys(tmp_path_factory) -> dict[str, str]:
    """tests/hear_modules pip-installed as the distribution asc-bench-hear-toys 0.3.1."""
    target = tmp_path_factory.mktemp("hear-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(MODULES)],
                   check=True, cwd=tmp_path_factory.mktemp("hear-build"), capture_output=True)
    return {"PYTHONPATH": str(target) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
@pytest.mark.parametrize("module", ["hear_numpy_toy", "hear_tf_toy"])
def test_installed_hear_modules_run_the_demo_task_and_record_their_version(installed_toys, module, demo_root, tmp_path):
    if module == "hear_tf_toy":
        pytest.importorskip("tensorflow")
    args = ["--encoder", f"hear:{module}", "--task", "demo-5way1shot", "--param", "episodes=20", "--data-root",
            str(demo_root), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")]
    if module == "hear_tf_toy":
        np.savez(tmp_path / "p.npz", projection=np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32))
        args += ["--checkpoint", str(tmp_path / "p.npz")]
    rec = run_json(*args, env=installed_toys)
    config = rec["encoder"]["config"]
    assert config["distribution"] == "asc-bench-hear-toys" and config["version"] == "0.3.1"
    assert config["framework"] == ("tensorflow" if module == "hear_tf_toy" else "numpy")
    assert rec["summary"]["n"] == 20 and np.isfinite(rec["scores"]).all()
    if module == "hear_tf_toy":
        assert rec["encoder"]["checkpoint_sha256"] and rec["encoder"]["params"] == 32
