"""After training: score the trained model the way the paper's tables do (BLiMP per phenomenon, bits per byte of
evaluation lines scored one by one) inside the run, so every job of a sweep carries its own Table I numbers.

The scores land in ``final_eval.json`` and in the run's ``summary.json`` (keys ``blimp/<phenomenon>``,
``blimp/average``, ``val_lines/bpb``, ``val_lines/ppl``) where ``squat-report`` aggregates them over seeds. They are
the numbers ``squat-eval`` gives for the saved model (same functions, same inputs).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch

from squat.eval.blimp import eval_lines, evaluate_blimp, line_bits_per_byte, read_blimp

log = logging.getLogger("squat")


class FinalEvaluation(L.Callback):
    """``blimp_dir``: a folder of BLiMP JSON-lines files (null: no BLiMP); ``blimp_max_pairs``: pairs per phenomenon,
    spread over each file (null: all); ``lines``: how many evaluation lines to score one by one (null: all, 0: none)."""

    def __init__(self, output_dir: str, blimp_dir: str | None = None, lines: int | None = 2000,
                 blimp_max_pairs: int | None = None):
        if blimp_dir is not None and not Path(blimp_dir).is_dir():
            raise FileNotFoundError(f"callbacks.final_eval.blimp_dir={blimp_dir!r} is not a folder of BLiMP *.json "
                                    "files (e.g. ../shared/data/blimp_filtered_sample), or set it to null")
        if blimp_dir is not None:
            read_blimp(blimp_dir)  # a malformed or empty file fails now, named, not after training
        if lines is not None and lines < 0:
            raise ValueError(f"callbacks.final_eval.lines={lines} must be >= 0 (or null for every line)")
        if blimp_max_pairs is not None and blimp_max_pairs < 1:
            raise ValueError(f"callbacks.final_eval.blimp_max_pairs={blimp_max_pairs} must be positive (or null: all)")
        self.output_dir, self.blimp_dir, self.lines, self.max_pairs = Path(output_dir), blimp_dir, lines, blimp_max_pairs
        self.result: dict[str, float] = {}

    @torch.no_grad()
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        dm, model = trainer.datamodule, pl_module.student
        was_training = model.training
        model.eval()
        try:
            res: dict[str, float] = {}
            if self.lines != 0:
                lines = line_bits_per_byte(model, dm.tokenizer, eval_lines(dm.cfg, self.lines))
                res.update({f"val_lines/{k}": v for k, v in lines.items()})
            if self.blimp_dir:
                res.update({f"blimp/{k}": v for k, v in evaluate_blimp(model, dm.tokenizer, self.blimp_dir, self.max_pairs).items()})
        finally:
            model.train(was_training)
        self.result = res
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "final_eval.json").write_text(json.dumps(res, indent=2))
        for lg in trainer.loggers:
            lg.log_metrics({f"final/{k}": v for k, v in res.items()}, step=trainer.global_step)
        log.info("FinalEvaluation: %s", ", ".join(f"{k} {v:.4g}" for k, v in res.items()))
