"""ContrastASC stage 1: fine-tune BEATs with a cosine classifier and mixup-aware SupCon (recipe
``contrastasc-teacher``). Facts: specs/contrastasc.md sections 3 and 8.

Model: BEATs -> mean of the last-layer tokens z (768-d) -> cosine classifier s·<z/|z|, w_c/|w_c|>
(s = 56) and a two-layer projection MLP (768 -> 768 -> 128, L2-normalised) feeding SupCon, whose
positive weights are the mixup soft-label dot products Y·Yᵀ. Stage A trains the heads with the
backbone frozen; stage B unfreezes everything. Loss = λ·CE + (1−λ)·SupCon with λ = 0.25 (the source
document's reading; ``lambda_on: supcon`` gives the reverse, the spec marks the convention unverified).

Export (``export/teacher/``): ``beats.pt`` = the fine-tuned backbone in the official ``{'cfg','model'}``
layout (so ``--encoder beats --checkpoint export/teacher/beats.pt`` embeds with it),
``head.safetensors`` (``classifier.weight``, ``projection.*``) and ``teacher.json`` (classes, scale,
which feature the classifier reads) — what the student recipe needs to turn cached teacher embeddings
into teacher logits.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from asc_bench import distributed as dist
from asc_bench.embedding.frontends import BEATS, BEATS_MEAN, BEATS_STD, beats_normalise, kaldi_fbank
from asc_bench.training.config import ConfigError, opt
from asc_bench.training.loop import Built, ParamGroup, Stage
from asc_bench_plugins.beats.model import BEATs, BEATsConfig
from asc_bench_plugins.contrastasc.heads import ProjectionHead
from asc_bench_plugins.contrastasc.losses import SupConLoss

FORMAT = "asc-bench/contrastasc-teacher"


@dataclass
class TeacherConfig:
    backbone_checkpoint: str | None = opt(None, "official BEATs .pt (pre-trained or AS2M fine-tuned; which one "
                                                "ContrastASC used is unverified)")
    random_init: bool = opt(False, "random backbone instead of a checkpoint (tests, smoke runs)")
    backbone_cfg: dict = opt({}, "BEATsConfig fields for random_init (e.g. encoder_layers: 2)")
    head_steps: int = opt(100, "stage A length: backbone frozen, heads trained (schedule unverified)", min=0)
    classifier_scale: float = opt(56.0, "cosine classifier scale s (paper summary: 56)", min=0.0)
    classifier_input: str = opt("backbone", "feature the cosine classifier reads (unverified)",
                                choices=("backbone", "projection"))
    projection_dim: int = opt(128, "SupCon projection output size (paper summary: 128)", min=1)
    projection_hidden: int = opt(0, "projection hidden width; 0 = backbone width (SupContrast)", min=0)
    loss_lambda: float = opt(0.25, "λ of λ·A + (1−λ)·B (source document: 0.25)", min=0.0)
    lambda_on: str = opt("ce", "which term λ weights: ce -> 0.25·CE + 0.75·SupCon (source document); "
                               "supcon -> the reverse (the spec calls the convention unverified)",
                         choices=("ce", "supcon"))
    supcon_temperature: float = opt(0.07, "SupCon τ (SupContrast default; unverified for ContrastASC)", min=1e-6)
    supcon_base_temperature: float = opt(0.07, "SupCon τ_base", min=1e-6)
    mixup_alpha: float = opt(0.3, "mixup Beta(α, α) on fbanks; 0 = no mixup (α unverified)", min=0.0)
    mixup_prob: float = opt(1.0, "probability that a micro-batch is mixed", min=0.0)
    mixup_per_sample: bool = opt(False, "one λ per clip (CP-JKU style) instead of one per batch")
    fbank_mean: float = opt(BEATS_MEAN, "BEATs fbank normalisation mean")
    fbank_std: float = opt(BEATS_STD, "BEATs fbank normalisation std", min=1e-6)
    backbone_lr_scale: float = opt(1.0, "backbone lr multiplier (with the common layer_decay)", min=0.0)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, g: torch.Generator, per_sample: bool
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """x_i ← λ_i x_i + (1−λ_i) x_π(i), y likewise, λ ~ Beta(α, α), π a random permutation."""
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))
    lam = rng.beta(alpha, alpha, size=x.shape[0] if per_sample else 1).astype(np.float32)
    lam_t = torch.from_numpy(np.broadcast_to(lam, (x.shape[0],)).copy()).to(x.device)
    perm = torch.randperm(x.shape[0], generator=g).to(x.device)
    lx = lam_t.view(-1, *([1] * (x.dim() - 1)))
    return lx * x + (1 - lx) * x[perm], lam_t[:, None] * y + (1 - lam_t[:, None]) * y[perm]


def cosine_logits(z: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * F.normalize(z, dim=-1) @ F.normalize(weight, dim=-1).T


def load_backbone(rc: TeacherConfig) -> BEATs:
    if rc.random_init:
        return BEATs(BEATsConfig.from_cfg({**rc.backbone_cfg, "finetuned_model": False}))
    from asc_bench_plugins.beats.encoder import load_beats

    model = load_beats(rc.backbone_checkpoint)
    if model.predictor is not None:     # a fine-tuned file: its AudioSet head is not used
        model.predictor = None
        model.cfg = replace(model.cfg, finetuned_model=False)
    return model


class TeacherModel(nn.Module):
    def __init__(self, rc: TeacherConfig, n_classes: int, recipe: "TeacherRecipe"):
        super().__init__()
        self.rc = rc
        self.backbone = load_backbone(rc)
        dim = self.backbone.cfg.encoder_embed_dim
        self.projection = ProjectionHead(dim, rc.projection_dim, rc.projection_hidden or dim, "none")
        in_dim = dim if rc.classifier_input == "backbone" else rc.projection_dim
        self.classifier = nn.Linear(in_dim, n_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.01)
        self.supcon = SupConLoss(rc.supcon_temperature, rc.supcon_base_temperature)
        self._recipe = [recipe]         # not a submodule
        self.backbone_trainable = False

    def embed(self, wave: torch.Tensor, g: torch.Generator | None = None, y: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        rc = self.rc
        with torch.no_grad():
            fbank, _ = kaldi_fbank(wave, None, BEATS)
            fbank = beats_normalise(fbank, rc.fbank_mean, rc.fbank_std)
        if g is not None and y is not None and rc.mixup_alpha > 0 and \
                float(torch.rand((), generator=g)) < rc.mixup_prob:
            fbank, y = mixup(fbank, y, rc.mixup_alpha, g, rc.mixup_per_sample)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.backbone_trainable):
            tokens, _ = self.backbone.forward_tokens(fbank)
        return tokens.mean(dim=1), y

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        rc, ctx = self.rc, self._recipe[0].ctx
        y = F.one_hot(batch["label"], self.classifier.out_features).float()
        z, y = self.embed(batch["wave"], ctx.generator("mixup"), y)
        p = self.projection(z)
        logits = cosine_logits(z if rc.classifier_input == "backbone" else p, self.classifier.weight,
                               rc.classifier_scale)
        ce = -(y * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
        # SupCon couples the whole global batch: gather (with gradient) across torchrun ranks.
        sup = self.supcon(dist.all_gather_grad(p), soft_labels=dist.all_gather_cat(y))
        lam = rc.loss_lambda
        loss = lam * ce + (1 - lam) * sup if rc.lambda_on == "ce" else lam * sup + (1 - lam) * ce
        acc = (logits.argmax(-1) == y.argmax(-1)).float().mean()
        return {"loss": loss, "ce": ce.detach(), "supcon": sup.detach(), "acc": acc}


def beats_layer_id(name: str) -> int:
    """0 for everything below the transformer layers, k + 1 for ``encoder.layers.k.*``."""
    parts = name.split(".")
    if len(parts) > 3 and parts[1] == "encoder" and parts[2] == "layers":
        return int(parts[3]) + 1
    return 0


class TeacherRecipe:
    """``contrastasc-teacher`` (see the module docstring)."""

    config_class = TeacherConfig
    sample_rate = 16000
    clip_seconds = 1.0          # TAU22 clips are 1 s

    def validate(self, config: Any, rc: TeacherConfig) -> None:
        if rc.random_init == (rc.backbone_checkpoint is not None):
            raise ConfigError("recipe: give exactly one of 'recipe.backbone_checkpoint' (an official BEATs .pt) "
                              "and 'recipe.random_init: true'")
        if rc.head_steps > config.steps:
            raise ConfigError(f"config key 'recipe.head_steps' ({rc.head_steps}) exceeds 'steps' ({config.steps})")
        if rc.loss_lambda > 1:
            raise ConfigError("config key 'recipe.loss_lambda' must be in [0, 1]")
        if rc.backbone_cfg and not rc.random_init:
            raise ConfigError("config key 'recipe.backbone_cfg' only applies with random_init (a checkpoint's "
                              "cfg fixes the size)")

    def build(self, config: Any, ctx: Any) -> Built:
        self.ctx, rc = ctx, ctx.recipe_config
        try:
            self.model = TeacherModel(rc, len(ctx.classes), self)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config key 'recipe.backbone_cfg': {exc}") from None
        backbone = [(f"backbone.{n}", p) for n, p in self.model.backbone.named_parameters()]
        heads = [(n, p) for n, p in self.model.named_parameters() if not n.startswith("backbone.")]
        groups = [ParamGroup("backbone", backbone, lr_scale=rc.backbone_lr_scale, layer_id=beats_layer_id,
                             num_layers=self.model.backbone.cfg.encoder_layers),
                  ParamGroup("heads", heads)]
        stages = [Stage("A-heads", 0, rc.head_steps, ("heads",)),
                  Stage("B-all", rc.head_steps, config.steps, ("heads", "backbone"))]
        return Built(self.model, groups, [s for s in stages if s.end > s.start])

    def on_stage(self, stage: Stage) -> None:
        self.model.backbone_trainable = "backbone" in stage.train

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        return self.ctx.model(batch, step)

    def export(self, out_dir: Path) -> Path:
        return save_teacher(out_dir / "teacher", self.model, self.ctx.classes,
                            {"recipe": self.ctx.recipe_name, "dataset": self.ctx.config.dataset,
                             "steps": self.ctx.step + 1})


def save_teacher(folder: Path, model: TeacherModel, classes: list[str], extra: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    backbone = {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
    torch.save({"cfg": asdict(model.backbone.cfg), "model": backbone}, folder / "beats.pt")
    heads = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
             if k.startswith(("classifier.", "projection."))}
    save_file(heads, str(folder / "head.safetensors"))
    rc = model.rc
    doc = {"format": FORMAT, "version": 1, "classes": list(classes), "classifier_scale": rc.classifier_scale,
           "classifier_input": rc.classifier_input, "projection_dim": rc.projection_dim,
           "projection_hidden": rc.projection_hidden or model.backbone.cfg.encoder_embed_dim,
           "embed_dim": model.backbone.cfg.encoder_embed_dim, "fbank_mean": rc.fbank_mean,
           "fbank_std": rc.fbank_std, "extra": extra}
    (folder / "teacher.json").write_text(json.dumps(doc, indent=1) + "\n")
    return folder
