"""`folder`: one sub-folder per class, audio files anywhere below it (the label is the folder name).

Option `groups`: `none` (default) or `subfolder`: the first folder level below the class folder is
the clip's group (`<class>/<recording>/<clip>.wav`; files directly in the class folder get none).
"""
from __future__ import annotations

import os

from asc_bench.api import Clip, DatasetRequest, LayoutError
from asc_bench_plugins.datasets._layout import check_options, opt_choice

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def build_folder(request: DatasetRequest) -> list[Clip]:
    root = request.root
    if root is None:
        raise LayoutError("dataset 'folder' needs --data-root DIR (one sub-folder per class)")
    if not root.is_dir():
        raise LayoutError(f"dataset 'folder': {root} is not a directory; pass --data-root with a folder "
                          f"holding one sub-folder per class")
    options = check_options(request.options, ("extensions", "groups"), "folder")
    exts = tuple(e.lower() for e in options.get("extensions", AUDIO_EXTENSIONS))
    by_subfolder = opt_choice(options, "groups", ("none", "subfolder"), "none", "folder") == "subfolder"
    clips: list[Clip] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith(exts):
                    rel = os.path.relpath(dirpath, class_dir)
                    group = rel.split(os.sep, 1)[0] if by_subfolder and rel != os.curdir else None
                    clips.append(Clip(path=os.path.join(dirpath, name), label=class_dir.name, group=group))
    if not clips:
        raise LayoutError(f"dataset 'folder': no audio files ({', '.join(exts)}) in sub-folders of {root}; "
                          f"expected {root}/<class name>/<file>.wav")
    return clips
