"""The LightningModule: the student being trained plus, for QAT, the frozen teacher(s).

This is where the pieces meet: ``squat.quant`` (the student's quantizers, per-forward record and token state),
``squat.losses`` (tensors in, loss terms out) and Lightning (optimisation, logging, checkpoints).
"""
from __future__ import annotations

from typing import Sequence

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from squat.config import MethodConfig, StageConfig
from squat.eval.perplexity import NLLMeter, sum_nll
from squat.losses import distillation_loss, distribution_loss, entropy_loss, total_loss
from squat.quant.quantizers import set_nipq_hard


def make_optimizer(model: torch.nn.Module, stage: StageConfig, total_steps: int):
    """AdamW (no decay on norms, biases and quantizer parameters) and cosine-with-warmup, stepped per batch."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "_quant" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": stage.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=stage.lr,
        betas=tuple(stage.betas),
    )
    total = max(total_steps, 1)
    sched = get_cosine_with_min_lr_schedule_with_warmup(
        opt,
        num_warmup_steps=min(stage.warmup_steps, total // 2),
        num_training_steps=total,
        min_lr_rate=stage.min_lr_ratio,
    )
    return opt, sched


class SquatLitModule(L.LightningModule):
    def __init__(
        self,
        student: torch.nn.Module,
        stage: StageConfig,
        method: MethodConfig | None = None,
        teachers: Sequence[torch.nn.Module] = (),
        token_bytes: torch.Tensor | None = None,
    ):
        super().__init__()
        self.student = student
        self.stage_cfg = stage
        self.method_cfg = method or MethodConfig()
        # A plain list keeps the frozen teachers out of state_dict, checkpoints and the optimiser.
        self.teachers = list(teachers)
        for t in self.teachers:
            t.eval().requires_grad_(False)
        self.register_buffer("token_bytes", token_bytes if token_bytes is not None else torch.zeros(0), persistent=False)
        self._meter = NLLMeter()
        # (global step, metrics) of the last validation inside fit(): a run whose last in-fit validation fell on its
        # final step reuses it instead of scoring the whole split a second time
        self.fit_val: tuple[int, dict] | None = None

    @property
    def quant(self):
        return getattr(self.student, "squat_quant", None)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.student(input_ids=input_ids).logits

    def on_fit_start(self) -> None:
        for t in self.teachers:
            t.to(self.device)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """NIPQ: noise for the first ``1 - hard_fraction`` of the steps, then hard quantization to the end."""
        frac = self.method_cfg.hard_fraction
        if frac is not None and self.quant is not None:
            total = int(self.trainer.estimated_stepping_batches)
            hard = self.trainer.global_step >= round((1.0 - frac) * total)
            set_nipq_hard(self.student, hard)
            self.log("train/hard_quant", float(hard))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if not self.teachers:
            loss = sum_nll(self(batch), batch) / batch[:, 1:].numel()
            self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # DDP: the mean over ranks = the global batch's
            return loss
        terms = self.qat_losses(batch)
        for k, v in terms.items():
            self.log(f"train/{k}", v, prog_bar=k == "loss", sync_dist=True)
        if self.quant is not None and self.quant.state is not None:
            self.log("train/low_bit_token_fraction", self.quant.state.low_fraction(), sync_dist=True)
        return terms["loss"]

    def qat_losses(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Distillation from the teacher ensemble plus, for Squat, the entropy and distribution losses."""
        m = self.method_cfg
        handle = self.quant
        need_qk = handle is not None and m.r_entropy > 0
        need_maps = handle is not None and m.r_distribution > 0
        if handle is not None:
            handle.record.keep_qk, handle.record.keep_maps = need_qk, need_maps
            handle.record.clear()
        s_logits = self(batch)
        with torch.no_grad():
            outs = [t(input_ids=batch, output_attentions=need_maps and i == 0) for i, t in enumerate(self.teachers)]
            t_logits = torch.stack([o.logits.float() for o in outs]).mean(0)
        d = distillation_loss(
            s_logits[:, :-1], t_logits[:, :-1], batch[:, 1:],
            gamma=m.distill_gamma, temperature=m.temperature, direction=m.kl_direction.value,
        )
        ent = entropy_loss(handle.record.stacked("q"), handle.record.stacked("k"), form=m.entropy_form) if need_qk else None
        dist = None
        if need_maps:  # both maps come from a causally masked softmax: nothing to zero, nothing to stack
            rec = handle.record.maps
            dist = distribution_loss([rec[i] for i in sorted(rec)], outs[0].attentions, form=m.distribution_form,
                                     causal=False)
        if handle is not None:
            handle.record.clear()
        return total_loss(d, ent, dist, r_entropy=m.r_entropy, r_distribution=m.r_distribution)

    # ---- validation: perplexity and bits per byte over the whole split ----
    def on_validation_epoch_start(self) -> None:
        self._meter = NLLMeter(self.token_bytes)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._meter.update(self(batch), batch)

    def on_validation_epoch_end(self) -> None:
        res = {f"val/{k}": v for k, v in self._meter.sync().compute().items()}  # DDP: every rank scored its share
        if self.quant is not None and self.quant.state is not None:
            res["val/low_bit_token_fraction"] = self.quant.state.low_fraction()
        for k, v in res.items():
            self.log(k, v, prog_bar=k in ("val/loss", "val/ppl"))
        if self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            # float32, as trainer.validate() returns what was logged
            as_logged = {k: float(torch.as_tensor(v, dtype=torch.float32)) for k, v in res.items()}
            self.fit_val = (self.trainer.global_step, as_logged)

    def configure_optimizers(self):
        opt, sched = make_optimizer(self.student, self.stage_cfg, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
