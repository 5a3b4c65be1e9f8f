"""Miniatures of the five uaMix-MAE Table 2 datasets, each with >= 16 clips in each of >= 5 classes: enough
for the built-in 5-way 1-shot tasks (1 support + 15 queries per class) to run unchanged."""
from __future__ import annotations

from pathlib import Path

from dataset_miniatures import esc50, fsdkaggle2018, nsynth, scv2, voxceleb1

TABLE2_DATASETS = ("esc50", "voxceleb1", "nsynth", "scv2", "fsdkaggle2018")


def table2_miniatures(parent: Path) -> dict[str, Path]:
    """dataset name -> data root, as `bench --data-root NAME=DIR` takes it."""
    roots = {name: parent / name for name in TABLE2_DATASETS}
    esc50(roots["esc50"], per_fold=4, seconds=0.1)
    voxceleb1(roots["voxceleb1"], speakers=("id10001", "id10270", "id10271", "id10272", "id10273", "id10274"),
              test_speakers=("id10270", "id10271", "id10272", "id10273", "id10274"), videos=6, utts=3, seconds=0.1)
    nsynth(roots["nsynth"], splits=("test",), notes_per_instrument=16, seconds=0.1)
    scv2(roots["scv2"], speakers=48, seconds=0.1)
    fsdkaggle2018(roots["fsdkaggle2018"], train_per_class=10, test_per_class=6, seconds=0.1)
    return roots
