"""Callbacks every training run gets (added by ``squat.train.build``, not by config): they make a run stop
cleanly on a non-finite loss and resume to the same weights after a crash."""
from __future__ import annotations

import lightning as L
import numpy as np
import torch


class NonFiniteLoss(RuntimeError):
    pass


class FiniteLossGuard(L.Callback):
    """Stops at the first non-finite training loss, before its backward pass: no update is applied and no checkpoint
    is written after it, so the last checkpoint on disk is the last good one. All DDP ranks stop together."""

    def __init__(self, lr: float):
        self.lr = lr

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise NonFiniteLoss(self._message(trainer, pl_module, float(loss.detach().float().cpu())))

    def _message(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: float) -> str:
        lr_now = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        causes = []
        bad_params = [n for n, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
        if bad_params:
            causes.append(f"{len(bad_params)} parameters are already non-finite (first: {bad_params[0]}), so an "
                          "earlier update diverged")
        tiny = []
        for name, m in pl_module.named_modules():
            if hasattr(m, "scale") and hasattr(m, "initialized") and bool(m.initialized):
                s = m.scale().detach()
                if not torch.isfinite(s).all() or float(s.abs().min()) < 1e-8:
                    tiny.append(f"{name} (step size {float(s.abs().min()):.3g})")
        if tiny:
            causes.append(f"a quantizer's step size is at zero or non-finite: {tiny[0]}"
                          + (f" and {len(tiny) - 1} more" if len(tiny) > 1 else "")
                          + "; a lower stage.lr keeps learned step sizes positive")
        causes.append(f"the learning rate: stage.lr={self.lr:g} (lr {lr_now:.3g} at this step) is likely too high; "
                      f"try stage.lr={self.lr / 10:g}")
        last = [cb.last_model_path for cb in trainer.checkpoint_callbacks
                if getattr(cb, "last_model_path", "")]
        kept = (f"the last good checkpoint is {last[0]} (resume it with ckpt_path=last after the fix)" if last
                else "no checkpoint had been written yet")
        return (f"training loss is {loss} at step {trainer.global_step + 1} (trainer.global_step={trainer.global_step}): "
                f"stopped before this update; {kept}. Likely cause: " + "; or ".join(causes))


class StepSeed(L.Callback):
    """Reseeds torch's RNG from (seed, step, micro-batch, rank) before every training batch, so dropout and NIPQ's
    noise are a function of the step: a resumed run draws what an uninterrupted one draws, and DDP ranks differ."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        acc = trainer.accumulate_grad_batches
        micro = trainer.global_step * acc + batch_idx % acc
        torch.manual_seed(int(np.random.SeedSequence([self.seed, micro, trainer.global_rank]).generate_state(1)[0]))



class FlushLogsAtCheckpoint(L.Callback):
    """Writes the loggers' buffered rows whenever a checkpoint is saved, so after a kill -9 the metrics on disk
    reach at least the checkpoint a resumed run continues from (the CSV logger otherwise flushes every 100 steps)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        for lg in trainer.loggers:
            lg.save()
