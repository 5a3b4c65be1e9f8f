"""ContrastASC stage 2: distil the fine-tuned BEATs teacher into a CP-Mobile student with
CE + KD + CRD (recipe ``contrastasc-student``). Facts: specs/contrastasc.md sections 1, 3, 5 and 8.

Teacher outputs are computed once per dataset through the embedding cache (the ``beats`` encoder on
the teacher's ``beats.pt``: mean of the last-layer tokens), so a second student of another size
reuses them; teacher logits follow from those embeddings and the exported cosine head. The student's
output block uses a LayerNorm instead of its BatchNorm (source document); the CRD student head is the
student's own projection head, so it is saved with the student. Defaults for everything the paper does
not state are RepDistiller's (marked "unverified" below).

Export: ``export/student.safetensors`` + ``student.json`` (``save_student``), loadable with
``--encoder contrastasc-cpm-<size> --checkpoint export/student.safetensors``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from asc_bench import distributed as dist
from asc_bench.api import CheckpointError
from asc_bench.training.config import ConfigError, opt
from asc_bench.training.loop import Built, ParamGroup, Stage
from asc_bench_plugins.contrastasc.checkpoint import save_student
from asc_bench_plugins.contrastasc.cpmobile import CPMobile, CPMobileConfig, normalise_strides
from asc_bench_plugins.contrastasc.frontend import SAMPLE_RATE, LogMel
from asc_bench_plugins.contrastasc.heads import ProjectionConfig, ProjectionHead
from asc_bench_plugins.contrastasc.losses import CRDLoss, KDLoss
from asc_bench_plugins.contrastasc.teacher import FORMAT as TEACHER_FORMAT, cosine_logits


@dataclass
class StudentConfig:
    teacher: str | None = opt(None, "folder written by contrastasc-teacher (export/teacher)")
    teacher_crop: str = opt("whole", "audio the teacher embeds per clip (cached once)",
                            choices=("whole", "fixed", "centre"))
    teacher_seconds: float | None = opt(None, "length for teacher_crop fixed/centre")
    teacher_batch_size: int = opt(8, "batch size of the one-off teacher pass", min=1)
    variant: str = opt("dcase23", "CP-Mobile variant (GRN or not, default strides)", choices=("dcase23", "dcase24"))
    frontend: str | None = opt(None, "log-mel frontend (None = the variant's; which one ContrastASC used is "
                                     "unverified)")
    base_channels: int = opt(32, "CP-Mobile width (size presets: 8/16/24/32 at x1.8 exp 2.1, or 32 x2.3 "
                                 "exp 3.0 = 126k; per-size configs of the paper are unverified)", min=1)
    multiplier: float = opt(2.3, "channel multiplier per stage", min=0.0)
    expansion: float = opt(3.0, "block expansion rate", min=0.0)
    blocks: list = opt([3, 2, 1], "blocks per stage")
    strides: dict | None = opt(None, "per-block strides, e.g. {b2: [2, 2]} (None = the variant's)")
    norm: str = opt("layer", "output-block normalisation (source document: LayerNorm replaces BatchNorm)",
                    choices=("batch", "layer"))
    norm_placement: str = opt("head", "where the LayerNorm goes: head (output block), projection (CRD "
                                      "head) or both", choices=("head", "projection", "both"))
    ce_weight: float = opt(1.0, "weight of CE (RepDistiller γ = 1; unverified)", min=0.0)
    kd_weight: float = opt(1.0, "weight of KD (RepDistiller CRD+KD α = 1; unverified)", min=0.0)
    crd_weight: float = opt(0.8, "weight of CRD (RepDistiller β = 0.8; unverified)", min=0.0)
    kd_temperature: float = opt(4.0, "KD temperature (RepDistiller 4, CP-JKU 2; unverified)", min=1e-6)
    kd_reduction: str = opt("batchmean", "KD averaging: batchmean (RepDistiller) or batch_class_mean (CP-JKU, "
                                         "C times smaller)", choices=("batchmean", "batch_class_mean"))
    crd_feat_dim: int = opt(128, "CRD embedding size (RepDistiller 128; unverified)", min=1)
    crd_k: int = opt(16384, "CRD negatives per sample (RepDistiller 16384; unverified)", min=1)
    crd_temperature: float = opt(0.07, "CRD NCE temperature (unverified)", min=1e-6)
    crd_momentum: float = opt(0.5, "CRD memory momentum (unverified)", min=0.0)
    crd_head_hidden: int = opt(0, "CRD head hidden width: 0 = RepDistiller's linear head; > 0 = the "
                                  "two-layer head the paper summary describes (width unverified)", min=0)
    crd_teacher_head_norm: str = opt("none", "LayerNorm in the teacher-side CRD head (unverified)",
                                     choices=("none", "layer"))
    crd_negatives: str = opt("other_class", "negatives from other classes (RepDistiller) or uniform",
                             choices=("other_class", "uniform"))


def read_teacher(folder: Path) -> dict[str, Any]:
    meta = folder / "teacher.json"
    if not meta.is_file() or not (folder / "beats.pt").is_file() or not (folder / "head.safetensors").is_file():
        raise CheckpointError(f"{folder} is not a teacher folder: expected teacher.json, beats.pt and "
                              f"head.safetensors as written by `asc-bench train contrastasc-teacher`")
    doc = json.loads(meta.read_text())
    if doc.get("format") != TEACHER_FORMAT:
        raise CheckpointError(f"{meta} has format {doc.get('format')!r}, expected {TEACHER_FORMAT!r}")
    return doc


def teacher_outputs(ctx: Any, rc: StudentConfig) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(embeddings (N, D), logits (N, C), teacher classes) for ``ctx.clips``, through the cache."""
    from safetensors.torch import load_file

    from asc_bench.data.audio import CropPolicy
    from asc_bench.data.listing import fingerprints
    from asc_bench.embedding.cache import EmbeddingCache
    from asc_bench.embedding.extract import embed_dataset, embedding_key
    from asc_bench.runner import build_encoder

    folder = Path(rc.teacher)
    doc = read_teacher(folder)
    enc = build_encoder(ctx.manager, "beats", checkpoint=folder / "beats.pt", device=str(ctx.device),
                        options={"fbank_mean": repr(doc["fbank_mean"]), "fbank_std": repr(doc["fbank_std"])})
    policy = CropPolicy.from_spec({"crop": rc.teacher_crop, **({"seconds": rc.teacher_seconds}
                                                               if rc.teacher_crop != "whole" else {})})
    key = embedding_key(enc.identity(), policy, int(enc.module.sample_rate), fingerprints(ctx.clips)[1])
    res = embed_dataset(enc.module, ctx.clips, key=key, cache=EmbeddingCache(ctx.cache_dir), policy=policy,
                        batch_size=rc.teacher_batch_size, device=str(ctx.device), show_progress=False)
    z = torch.from_numpy(np.array(res.embeddings, dtype=np.float32))
    heads = load_file(str(folder / "head.safetensors"))
    with torch.no_grad():
        feat = z
        if doc["classifier_input"] == "projection":
            proj = ProjectionHead(doc["embed_dim"], doc["projection_dim"], doc["projection_hidden"], "none")
            proj.load_state_dict({k[len("projection."):]: v for k, v in heads.items() if k.startswith("projection.")})
            feat = proj(z)
        logits = cosine_logits(feat, heads["classifier.weight"], float(doc["classifier_scale"]))
    return z, logits, list(doc["classes"])


def student_config(rc: StudentConfig, n_classes: int) -> CPMobileConfig:
    return CPMobileConfig(variant=rc.variant, base_channels=rc.base_channels, multiplier=rc.multiplier,
                          expansion=rc.expansion, blocks=tuple(int(b) for b in rc.blocks),
                          strides=None if rc.strides is None else normalise_strides(rc.strides),
                          n_classes=n_classes, norm=rc.norm, norm_placement=rc.norm_placement,
                          projection=ProjectionConfig(out_dim=rc.crd_feat_dim, hidden_dim=rc.crd_head_hidden))


class StudentModel(nn.Module):
    def __init__(self, rc: StudentConfig, config: CPMobileConfig, t_emb: torch.Tensor, t_logits: torch.Tensor,
                 labels: np.ndarray, seed: int, recipe: "StudentRecipe"):
        super().__init__()
        self.rc = rc
        self.frontend = LogMel(rc.frontend or rc.variant)
        self.net = CPMobile(config)
        self.crd = CRDLoss(self.net.embed_dim, t_emb.shape[1], len(labels), rc.crd_feat_dim, rc.crd_k,
                           rc.crd_temperature, rc.crd_momentum, head_hidden=rc.crd_head_hidden,
                           head_norm=rc.crd_teacher_head_norm, embed_s=self.net.projection,
                           dataset_labels=torch.as_tensor(labels) if rc.crd_negatives == "other_class" else None,
                           negatives=rc.crd_negatives, seed=seed)
        self.kd = KDLoss(rc.kd_temperature, rc.kd_reduction)
        # Precomputed, constant and recomputable from the cache: not part of checkpoints.
        self.register_buffer("t_emb", t_emb.float(), persistent=False)
        self.register_buffer("t_logits", t_logits.float(), persistent=False)
        self._recipe = [recipe]

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        rc, ctx = self.rc, self._recipe[0].ctx
        features = self.net.forward_features(self.frontend(batch["wave"]).unsqueeze(1))
        emb, logits = self.net.pooled(features), self.net.logits(features)
        idx = batch["index"]
        ce = F.cross_entropy(logits, batch["label"])
        kd = self.kd(logits, self.t_logits[idx]) if rc.kd_weight > 0 else logits.new_zeros(())
        self.crd.sampler = ctx.generator("crd-negatives")   # negatives: a function of (seed, step)
        out = self.crd.step(emb, self.t_emb[idx], idx, update_memory=not dist.is_distributed())
        if dist.is_distributed():
            # Every rank writes the whole global batch into its banks, so they stay identical.
            self.crd.update_memory(dist.all_gather_cat(idx), dist.all_gather_cat(out.embed_s.detach()),
                                   dist.all_gather_cat(out.embed_t.detach()))
        loss = rc.ce_weight * ce + rc.kd_weight * kd + rc.crd_weight * out.loss
        acc = (logits.argmax(-1) == batch["label"]).float().mean()
        return {"loss": loss, "ce": ce.detach(), "kd": kd.detach(), "crd": out.loss.detach(), "acc": acc}


class StudentRecipe:
    """``contrastasc-student`` (see the module docstring)."""

    config_class = StudentConfig
    sample_rate = SAMPLE_RATE
    clip_seconds = 1.0

    def validate(self, config: Any, rc: StudentConfig) -> None:
        if not rc.teacher:
            raise ConfigError("config key 'recipe.teacher' is required: the export/teacher folder of a "
                              "contrastasc-teacher run")
        if rc.teacher_crop != "whole" and not rc.teacher_seconds:
            raise ConfigError("config key 'recipe.teacher_seconds' is required with teacher_crop fixed/centre")
        if len(rc.blocks) != 3:
            raise ConfigError(f"config key 'recipe.blocks' must hold three stage depths, got {rc.blocks}")

    def build(self, config: Any, ctx: Any) -> Built:
        self.ctx, rc = ctx, ctx.recipe_config
        t_emb, t_logits, t_classes = teacher_outputs(ctx, rc)
        if rc.kd_weight > 0 and t_classes != list(ctx.classes):
            raise ConfigError(f"KD needs the teacher's classes {t_classes[:5]}... to equal the student's "
                              f"{list(ctx.classes)[:5]}...; train on the teacher's dataset or set "
                              f"recipe.kd_weight: 0")
        try:
            cpm = student_config(rc, len(ctx.classes))
        except ValueError as exc:
            raise ConfigError(f"recipe section: {exc}") from None
        self.model = StudentModel(rc, cpm, t_emb, t_logits, ctx.labels, config.seed, self)
        params = list(self.model.named_parameters())
        return Built(self.model, [ParamGroup("student", params)], [Stage("distil", 0, config.steps, ("student",))])

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        return self.ctx.model(batch, step)

    def after_step(self, step: int) -> None:
        if step == 0:
            self.model.crd.sync_normalizers()     # Z constants of rank 0 everywhere (no-op on one process)

    def export(self, out_dir: Path) -> Path:
        weights, _ = save_student(out_dir / "student", self.model.net.eval(), frontend=self.model.frontend.kind,
                                  extra={"recipe": self.ctx.recipe_name, "teacher": str(self.ctx.recipe_config.teacher),
                                         "classes": list(self.ctx.classes), "steps": self.ctx.step + 1})
        self.model.net.train()
        return weights
