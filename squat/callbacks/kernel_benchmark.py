"""After training: export the quantized student, build the native kernels (cached), check them bit for bit on
the model's real weights and activations, benchmark every distinct linear shape, and log the result.

A missing toolchain or any benchmark failure is logged in one line and never fails the training run: the
trained model matters more than its benchmark.
"""
from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from squat.export import MANIFEST_FILE, export_model
from squat.kernels.build import ToolchainMissing
from squat.quant.prepare import quant_linears

log = logging.getLogger("squat")


class KernelBenchmark(L.Callback):
    def __init__(self, output_dir: str, reps: int = 3, insn: bool = True, check_tokens: int = 128):
        self.output_dir = Path(output_dir)
        self.reps, self.insn, self.check_tokens = reps, insn, check_tokens
        self.result: dict | None = None
        self.skipped: str | None = None  # why there is no result (for the run summary)

    @torch.no_grad()
    def _real_activations(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        """Input of every quantized linear on the first validation batch (first sequence), float32 [M, K]."""
        acts, hooks = {}, []
        for name, lin in quant_linears(pl_module.student).items():
            hooks.append(lin.register_forward_pre_hook(
                lambda m, args, name=name: acts.__setitem__(name, args[0][0, : self.check_tokens].float().cpu().numpy())
            ))
        try:
            batch = next(iter(trainer.datamodule.val_dataloader()))
            was = pl_module.training
            pl_module.eval()
            pl_module(batch[:1].to(pl_module.device))
            pl_module.train(was)
        finally:
            for h in hooks:
                h.remove()
        return acts

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        handle = getattr(pl_module.student, "squat_quant", None)
        if handle is None or handle.config.weight_bits is None or not trainer.is_global_zero:
            log.info("KernelBenchmark: float model, nothing to benchmark")
            return
        from squat.kernels.bench import run_kernel_benchmark

        export_dir = self.output_dir / "export"
        try:
            if not (export_dir / MANIFEST_FILE).is_file():
                export_model(pl_module.student, export_dir)
            tp = handle.config.token_policy
            self.result = run_kernel_benchmark(
                export_dir,
                seq_len=trainer.datamodule.cfg.seq_len,
                ratio=tp.ratio if tp.enabled else 0.5,
                out_dir=self.output_dir,
                check_activations=self._real_activations(trainer, pl_module),
                reps=self.reps,
                insn=self.insn,
            )
        except ToolchainMissing as e:
            log.warning("KernelBenchmark skipped: %s", e)
            self.skipped = str(e)
            return
        except Exception as e:  # the benchmark must never cost the user the trained model
            log.exception("KernelBenchmark failed (training outputs are unaffected): %s", e)
            return
        self._log(trainer)

    def _log(self, trainer: L.Trainer) -> None:
        res = self.result
        metrics = {"kernel/bit_exact": float(res["exactness"]["ok"])}
        for m, table in res.get("ms_per_token", {}).items():
            for label, ms in table.items():
                key = label.replace(" ", "_")
                metrics[f"kernel/host_ms_per_token_M{m}/{key}"] = ms
        for cpu, by_m in res.get("insn_per_token", {}).items():
            for m, table in by_m.items():
                fp16 = table.get("FP16")
                for label, n in table.items():
                    if fp16:
                        metrics[f"kernel/insn_speedup_vs_fp16_{cpu}_M{m}/{label}"] = fp16 / n
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
            lg.save()
        md = self.output_dir / "kernel_bench.md"
        status = "PASS" if res["exactness"]["ok"] else f"FAIL {res['exactness']['failures'][:3]}"
        log.info("KernelBenchmark: bit-exact %s; summary in %s", status, md)


def kernel_headline(res: dict) -> str:
    """One line for the run summary: bit-exactness, then instruction speedups under qemu over the spill-free FP16
    kernel (fp16 in and out), every integer path a fused linear with its activation quantization (fp32 in) and
    dequantization (fp32 out) counted, at prefill (M = the run's sequence length) and decode (M = 1)."""
    parts = [f"bit-exact {'PASS' if res['exactness']['ok'] else 'FAIL'}"]
    for cpu, by_m in res.get("insn_per_token", {}).items():
        for m in sorted(by_m, key=int, reverse=True):
            t = by_m[m]
            fp16 = t.get("FP16")
            if fp16:
                sp = ", ".join(f"{k} {fp16 / t[k]:.2f}x" for k in ("W8A8", "W4A8", "mixed", "W4A4") if k in t)
                parts.append(f"{cpu} {'decode' if m == '1' else 'prefill'} M={m}: {sp}")
    if "insn_per_token" not in res:
        parts.append(f"no qemu instruction counts ({res.get('insn_skipped', 'callbacks.kernel_benchmark.insn=false')})")
    elif len(parts) > 1:
        parts[1] = "vs FP16, quantization counted: " + parts[1]
    return "; ".join(parts) + " (details: kernel_bench.md)"
