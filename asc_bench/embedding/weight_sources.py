"""Where each built-in encoder's weights come from (`asc-bench list weights`), and "official" matching.

Facts from specs/encoders.md section 5 and specs/contrastasc.md (sources section). The downloads are
OneDrive (BEATs) and Google Drive (AudioMAE) links on the release pages; asc-bench does not fetch them
(they need a browser; the files are hundreds of MB). No ContrastASC and no uaMix-MAE weights were ever
released: they must be trained with the recipes named below.

`official_name(sha256)` says which released file a checkpoint is, when the release publishes a sha256.
None of the releases above publishes one (none is recorded in the specs), so `PUBLISHED_SHA256` is empty
and nothing is called official yet; add a digest here only when its publisher prints it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class WeightSource:
    encoders: tuple[str, ...]
    release: str                 # official release page, or "" when nothing was released
    files: tuple[str, ...]       # file names as the release names them
    not_released: str = ""       # what is not released
    recipe: str = ""             # how asc-bench produces it when it is not released
    note: str = ""


SOURCES: tuple[WeightSource, ...] = (
    WeightSource(("beats",), "https://github.com/microsoft/unilm/tree/master/beats (README: OneDrive links)",
                 ("BEATs_iter3.pt", "BEATs_iter3_plus_AS20K.pt", "BEATs_iter3_plus_AS2M.pt",
                  "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt1.pt", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"),
                 note="≈361 MB each; iter1/iter2 also released; no checksums published"),
    WeightSource(("audiomae",), "https://github.com/facebookresearch/AudioMAE (README: Google Drive links)",
                 ("pretrained.pth", "finetuned.pth"),
                 note="ViT-B AS-2M pre-trained / AS-2M fine-tuned; no checksums published"),
    WeightSource(("uamix-mae",), "https://github.com/PLAN-Lab/uamix-MAE (README only; code 'coming soon')", (),
                 not_released="no uaMix-MAE weights were ever released",
                 recipe="asc-bench train uamix-mae --config <config> (starts from AudioMAE pretrained.pth)"),
    WeightSource(("contrastasc-cpm-6k", "contrastasc-cpm-19k", "contrastasc-cpm-35k", "contrastasc-cpm-61k",
                  "contrastasc-cpm-126k"), "", (),
                 not_released="no ContrastASC teacher or student weights were ever released (no code release found)",
                 recipe="asc-bench train contrastasc-teacher, then asc-bench train contrastasc-student",
                 note="loads CP-JKU DCASE23 CP-Mobile checkpoints (fschmid56/cpjku_dcase23) as a starting point"),
    WeightSource(("logmel-stats",), "", (), note="weight-free"),
)

# sha256 -> "official <name>", only for digests printed by the publisher. None is (see the module doc).
PUBLISHED_SHA256: Mapping[str, str] = {}


def official_name(sha256: str | None, published: Mapping[str, str] | None = None) -> str | None:
    """'official <file>' when `sha256` is a published digest of a released checkpoint, else None."""
    table = PUBLISHED_SHA256 if published is None else published
    if not sha256 or sha256.lower() not in table:
        return None
    return f"official {table[sha256.lower()]}"


def source_of(encoder: str) -> WeightSource | None:
    return next((s for s in SOURCES if encoder in s.encoders), None)


def weight_rows(manager: Any) -> list[dict[str, Any]]:
    """One row per registered encoder: release page, files, what is not released, the recipe."""
    rows = []
    for name, entry in sorted(manager.registries["encoders"].items()):
        src = source_of(name)
        if src is None:
            rows.append({"encoder": name, "release": "-", "files": "-", "not released": "-",
                         "recipe": "-", "note": f"plugin '{entry.plugin}': see its documentation"})
            continue
        rows.append({"encoder": name, "release": src.release or "-", "files": ", ".join(src.files) or "-",
                     "not released": src.not_released or "-", "recipe": src.recipe or "-", "note": src.note or "-"})
    return rows
