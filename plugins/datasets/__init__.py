"""Built-in dataset adapters: the official on-disk layouts as researchers download them (no
preprocessing step), plus generic `csv`, `folder`, `hf` (Hugging Face) and the synthetic `demo`."""
from __future__ import annotations

from typing import Callable

from asc_bench import hookimpl
from asc_bench.api import lazy

from asc_bench_plugins.datasets import (csv_list, esc50, fsdkaggle2018, hf, icme24, nsynth, scv2, tau22, tut17,
                                        voxceleb1)
from asc_bench_plugins.datasets.folder import build_folder


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    register("esc50", esc50.build, description="ESC-50 (ESC-50-master/meta/esc50.csv; splits fold1-fold5)")
    register("tut17", tut17.build,
             description="TUT Acoustic Scenes 2017 development (meta.txt; split = evaluate fold fold1-fold4)")
    register("tau22", tau22.build,
             description="TAU Urban Acoustic Scenes 2022 Mobile development (meta.csv; fold1 train/evaluate)")
    register("icme24", icme24.build,
             description="ICME 2024 GC ASC development, labelled part (option labelled: false for the rest)")
    register("nsynth", nsynth.build,
             description="NSynth (nsynth-{train,valid,test}/examples.json; option label: family|instrument|source)")
    register("scv2", scv2.build, description="Speech Commands v0.02 (35 words; train/validation/testing lists)")
    register("voxceleb1", voxceleb1.build,
             description="VoxCeleb1 identification (iden_split.txt: train/validation/test; label = speaker)")
    register("fsdkaggle2018", fsdkaggle2018.build,
             description="FSDKaggle2018 (train_post_competition.csv + post-competition test; 41 classes)")
    register("csv", csv_list.build, description="any clips listed in a CSV with a header (path,label[,split])")
    register("hf", hf.build,
             description="a Hugging Face dataset (save_to_disk folder, parquet, or hub name), decoded by asc-bench")
    register("folder", build_folder, description="one sub-folder per class of audio files")
    # Imported on first use (numpy, soundfile): listing plugins stays light.
    register("demo", lazy("asc_bench_plugins.datasets.demo:build_demo"),
             description="built-in synthetic scenes (no download; smoke tests)")
