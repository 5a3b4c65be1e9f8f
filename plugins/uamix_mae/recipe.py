"""uaMix-MAE contrastive tuning of an AudioMAE ViT with NNCLR and T-CutMix (recipe ``uamix-mae``).
Facts: specs/contrastasc.md sections 6 and 8, specs/encoders.md section 4.

Per micro-batch: the clip's AudioMAE input x (B, 1, frames, 128) and its mixture x̃ = mixer(x) with
virtual labels ỹ (B, B) (T-CutMix: λ·v_i + (1−λ)·v_j). The positives are the support-queue nearest
neighbours NN(proj(x)) of the clean clips (no gradient; from an EMA copy of the projector as in MAE-CT's
contrastive tuning when ``ema_momentum > 0``). The loss is the source document's mixture loss:
CE(ỹ, softmax(norm(pred(proj(x̃))) · NN(proj(x))ᵀ / τ)), the columns spanning the global batch under
torchrun. The clean projections are then enqueued with their clip ids. How uaMix-MAE builds its views
and enters the virtual labels into NNCLR is unpublished: this is our reading, not a reproduction.

Progressive retraining (MAE-CT): stage 1 trains projector + predictor with the encoder frozen; stage 2
also trains the upper half of the blocks and ``fc_norm`` with layer-wise lr decay (BEiT rule, common key
``layer_decay``, MAE-CT 0.65), the lower half stays frozen.

Export ``export/uamix_mae.safetensors``: ``backbone.*`` (the ViT, AudioMAE names, incl. ``pos_embed`` and
``fc_norm``) plus ``projector.*``, ``predictor.*``, ``queue`` — what ``--encoder uamix-mae --checkpoint``
reads (it keeps only ``backbone.*``; pass ``--encoder-option num_heads=N`` when N is not 12).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asc_bench import distributed as dist
from asc_bench.embedding.frontends import AUDIOMAE, AUDIOMAE_MEAN, AUDIOMAE_STD, audiomae_input, kaldi_fbank
from asc_bench.training.config import ConfigError, opt
from asc_bench.training.loop import Built, ParamGroup, Stage
from asc_bench_plugins.audiomae.vit import AudioViT, ViTConfig
from asc_bench_plugins.uamix_mae.mixing import MIXERS, build_mixer
from asc_bench_plugins.uamix_mae.nnclr import NNCLRLoss, nnclr_loss


@dataclass
class UamixConfig:
    backbone_checkpoint: str | None = opt(None, "AudioMAE pretrained.pth (or finetuned.pth)")
    random_init: bool = opt(False, "random ViT instead of a checkpoint (tests, smoke runs)")
    vit_cfg: dict = opt({}, "ViTConfig fields for random_init (embed_dim, depth, num_heads, mlp_hidden, "
                            "num_patches)")
    num_heads: int = opt(12, "attention heads of the checkpoint's ViT (not stored in the file)", min=1)
    head_steps: int = opt(100, "stage 1 length (head only; MAE-CT: 20 epochs)", min=0)
    frozen_blocks: int | None = opt(None, "blocks kept frozen in stage 2 (None = lower half, MAE-CT)")
    projector_hidden: int = opt(2048, "projector hidden width (MAE-CT)", min=1)
    projector_out: int = opt(256, "projection size (MAE-CT)", min=1)
    predictor_hidden: int = opt(4096, "predictor hidden width (MAE-CT)", min=1)
    queue_size: int = opt(65536, "support queue rows (MAE-CT; unverified for audio)", min=1)
    temperature: float = opt(0.15, "NNCLR τ (MAE-CT ViT-B)", min=1e-6)
    topk_stage1: int = opt(0, "neighbour drawn from the top-k in stage 1 (MAE-CT head: 0 = nearest)", min=0)
    topk_stage2: int = opt(20, "top-k in stage 2 (MAE-CT: 20; unverified for audio)", min=0)
    ema_momentum: float = opt(0.99, "EMA projector for neighbours/queue (MAE-CT 0.99; 0 = online "
                                    "projector)", min=0.0)
    head_lr_scale: float = opt(1.0, "lr multiplier of projector + predictor", min=0.0)
    head_weight_decay: float = opt(1e-5, "weight decay of projector + predictor (MAE-CT 1e-5)", min=0.0)
    mixer: str = opt("t-cutmix", "mixing (ablations: none, mixup-ls, tf-cutmix)", choices=tuple(MIXERS))
    mixer_alpha: float = opt(1.0, "Beta(α, α) of the mixer (unpublished; CutMix's 1.0)", min=1e-6)
    mixer_prob: float = opt(1.0, "probability a batch is mixed (unpublished)", min=0.0)
    mixer_per_sample: bool = opt(False, "one λ per clip instead of per batch")
    label_smoothing: float = opt(0.1, "ε of mixup-ls (unpublished)", min=0.0)
    fbank_mean: float = opt(AUDIOMAE_MEAN, "fbank normalisation mean (AudioSet)")
    fbank_std: float = opt(AUDIOMAE_STD, "fbank normalisation std (AudioSet)", min=1e-6)


def mlp(dims: list[int], last_bn: bool) -> nn.Sequential:
    """MAE-CT heads: Linear(no bias)-BN-ReLU blocks, the last Linear followed by BN or nothing."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        layers.append(nn.Linear(a, b, bias=False))
        last = i == len(dims) - 2
        if not last or last_bn:
            layers.append(nn.BatchNorm1d(b))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def load_vit(rc: UamixConfig) -> AudioViT:
    if rc.random_init:
        return AudioViT(ViTConfig(**rc.vit_cfg))
    from asc_bench.embedding.checkpoints import find_state_dict, read_checkpoint
    from asc_bench_plugins.audiomae.encoder import vit_from_state
    from asc_bench_plugins.uamix_mae.encoder import uamix_state

    path = Path(rc.backbone_checkpoint)
    obj = read_checkpoint(path)
    try:
        state = find_state_dict(obj, ("model",))
        if "pos_embed" not in state:
            raise KeyError
    except Exception:
        state = uamix_state(obj, path)      # also accepts a uaMix-style (prefixed) file
    return vit_from_state({k: v for k, v in state.items() if not k.startswith("head.")}, rc.num_heads, path)[0]


class UamixModel(nn.Module):
    def __init__(self, rc: UamixConfig, recipe: "UamixRecipe"):
        super().__init__()
        self.rc = rc
        self.backbone = load_vit(rc)
        if self.backbone.head is not None:
            self.backbone.head = None
        dim = self.backbone.cfg.embed_dim
        self.projector = mlp([dim, rc.projector_hidden, rc.projector_hidden, rc.projector_out], last_bn=True)
        self.predictor = mlp([rc.projector_out, rc.predictor_hidden, rc.projector_out], last_bn=False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False) if rc.ema_momentum > 0 else None
        self.nnclr = NNCLRLoss(rc.projector_out, rc.queue_size, rc.temperature, rc.topk_stage1, seed=0)
        kw: dict[str, Any] = {"alpha": rc.mixer_alpha, "p": rc.mixer_prob, "per_sample": rc.mixer_per_sample}
        if rc.mixer == "mixup-ls":
            kw["smoothing"] = rc.label_smoothing
        self.mixer = build_mixer(rc.mixer, **({} if rc.mixer == "none" else kw))
        self.trainable_from = self.backbone.cfg.depth + 1      # first block with gradients (none: head only)
        self._recipe = [recipe]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        vit, k = self.backbone, self.trainable_from
        with torch.no_grad():                # the frozen part never needs a graph
            h = vit.patch_embed(x) + vit.pos_embed[:, 1:]
            cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(h.shape[0], -1, -1)
            h = torch.cat([cls, h], dim=1)
            for block in vit.blocks[:k]:
                h = block(h)
        for block in vit.blocks[k:]:
            h = block(h)
        if k > len(vit.blocks):
            with torch.no_grad():
                return vit.pool(h)
        return vit.pool(h)

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        rc, ctx = self.rc, self._recipe[0].ctx
        with torch.no_grad():
            fbank, _ = kaldi_fbank(batch["wave"], None, AUDIOMAE)
            x = audiomae_input(fbank, self.backbone.cfg.input_frames, rc.fbank_mean, rc.fbank_std)
            x_mix, y_virtual = self.mixer(x, None, ctx.generator("mix"))
            target = self.target_projector or self.projector
            p_clean = target(self.encode(x))
        pred = self.predictor(self.projector(self.encode(x_mix)))
        ids = batch["index"]
        self.nnclr.generator = ctx.generator("nnclr-topk")
        neighbours = self.nnclr.find_nn(p_clean, ids).neighbours
        # Columns span the global batch; this rank's rows target its own block of columns.
        all_nn = dist.all_gather_cat(neighbours)
        b = neighbours.shape[0]
        targets = y_virtual.new_zeros(b, all_nn.shape[0])
        targets[:, dist.rank() * b:(dist.rank() + 1) * b] = y_virtual
        loss = nnclr_loss(pred, all_nn, rc.temperature, transposed=True, targets=targets)
        self.nnclr.enqueue(dist.all_gather_cat(p_clean), dist.all_gather_cat(ids))
        lam = torch.as_tensor(self.mixer.last.lam).float().mean() if self.mixer.last is not None else loss.new_ones(())
        return {"loss": loss, "nnclr": loss.detach(), "lam": lam}

    @torch.no_grad()
    def ema_update(self) -> None:
        if self.target_projector is None:
            return
        m = self.rc.ema_momentum
        for t, s in zip(self.target_projector.parameters(), self.projector.parameters()):
            t.mul_(m).add_(s.detach(), alpha=1 - m)
        for t, s in zip(self.target_projector.buffers(), self.projector.buffers()):
            t.copy_(s)


def vit_layer_id(name: str, depth: int) -> int:
    """BEiT rule: stem 0, block k -> k + 1, fc_norm -> depth + 1 (unscaled)."""
    parts = name.split(".")
    if parts[1] == "blocks":
        return int(parts[2]) + 1
    return depth + 1 if parts[1] == "fc_norm" else 0


class UamixRecipe:
    """``uamix-mae`` (see the module docstring)."""

    config_class = UamixConfig
    sample_rate = 16000
    clip_seconds = 10.0

    def validate(self, config: Any, rc: UamixConfig) -> None:
        if rc.random_init == (rc.backbone_checkpoint is not None):
            raise ConfigError("recipe: give exactly one of 'recipe.backbone_checkpoint' (AudioMAE pretrained.pth) "
                              "and 'recipe.random_init: true'")
        if rc.head_steps > config.steps:
            raise ConfigError(f"config key 'recipe.head_steps' ({rc.head_steps}) exceeds 'steps' ({config.steps})")
        if rc.vit_cfg and not rc.random_init:
            raise ConfigError("config key 'recipe.vit_cfg' only applies with random_init")
        if max(rc.topk_stage1, rc.topk_stage2) > rc.queue_size:
            raise ConfigError("config keys 'recipe.topk_stage1/2' must not exceed 'recipe.queue_size'")
        if rc.mixer_prob > 1:
            raise ConfigError("config key 'recipe.mixer_prob' must be in [0, 1]")

    def build(self, config: Any, ctx: Any) -> Built:
        self.ctx, rc = ctx, ctx.recipe_config
        try:
            self.model = UamixModel(rc, self)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config key 'recipe.vit_cfg': {exc}") from None
        depth = self.model.backbone.cfg.depth
        frozen = depth // 2 if rc.frozen_blocks is None else rc.frozen_blocks
        if not 0 <= frozen <= depth:
            raise ConfigError(f"config key 'recipe.frozen_blocks' must be in 0..{depth}, got {frozen}")
        self.frozen = frozen
        top, bottom = [], []
        for n, p in self.model.backbone.named_parameters():
            if n == "pos_embed":            # a fixed table in AudioMAE, never trained
                continue
            name = f"backbone.{n}"
            is_top = (n.startswith("blocks.") and int(n.split(".")[1]) >= frozen) or n.startswith("fc_norm.")
            (top if is_top else bottom).append((name, p))
        heads = [(n, p) for n, p in self.model.named_parameters()
                 if n.startswith(("projector.", "predictor."))]
        groups = [ParamGroup("heads", heads, lr_scale=rc.head_lr_scale, weight_decay=rc.head_weight_decay),
                  ParamGroup("top", top, layer_id=lambda n: vit_layer_id(n, depth), num_layers=depth),
                  ParamGroup("bottom", bottom)]
        stages = [Stage("1-head", 0, rc.head_steps, ("heads",)),
                  Stage("2-top-half", rc.head_steps, config.steps, ("heads", "top"))]
        return Built(self.model, groups, [s for s in stages if s.end > s.start])

    def on_stage(self, stage: Stage) -> None:
        rc, depth = self.ctx.recipe_config, self.model.backbone.cfg.depth
        second = "top" in stage.train
        self.model.trainable_from = self.frozen if second else depth + 1
        self.model.nnclr.topk = rc.topk_stage2 if second else rc.topk_stage1

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        return self.ctx.model(batch, step)

    def after_step(self, step: int) -> None:
        self.model.ema_update()

    def export(self, out_dir: Path) -> Path:
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        state = self.model.state_dict()
        keep = {k: v for k, v in state.items()
                if k.startswith(("backbone.", "projector.", "predictor.")) or k == "nnclr.queue"}
        tensors = {("queue" if k == "nnclr.queue" else k): v.detach().cpu().contiguous().clone()
                   for k, v in keep.items()}
        path = out_dir / "uamix_mae.safetensors"
        save_file(tensors, str(path), metadata={"format": "asc-bench/uamix-mae", "num_heads":
                                                str(self.model.backbone.cfg.num_heads)})
        return path


UAMIX_RECIPE = UamixRecipe
