"""After training: export the quantized student, build the native kernels (cached), check them bit for bit on
the model's real weights and activations, benchmark every distinct linear shape and the whole model through the
integer runtime (its own variant beside the runtime's FP16 / FP32 baselines of the same weights), and log the result.

A missing toolchain or any benchmark failure is logged in one line and never fails the training run: the
trained model matters more than its benchmark.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import lightning as L
import torch

from squat.export import MANIFEST_FILE, export_model
from squat.kernels.build import ToolchainMissing
from squat.quant.prepare import quant_linears

log = logging.getLogger("squat")
WHOLE_PREFILL = 32


class KernelBenchmark(L.Callback):
    def __init__(self, output_dir: str, reps: int = 3, insn: bool = True, check_tokens: int = 128):
        self.output_dir = Path(output_dir)
        self.reps, self.insn, self.check_tokens = reps, insn, check_tokens
        self.result: dict | None = None
        self.skipped: str | None = None  # why there is no result (for the run summary)

    def whole_model_options(self, seq_len: int) -> dict:
        """The cheap whole-model table after training (its qemu counts cost most, the FP16 baseline's above all):
        prefill 32 and decode, instructions on cortex-a76 only. ``squat-bench --export`` runs the full table."""
        return {"prefill": min(seq_len, WHOLE_PREFILL), "cpus": ["cortex-a76"]}

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
                whole=self.whole_model_options(trainer.datamodule.cfg.seq_len),
            )
            self._log(trainer)
        except ToolchainMissing as e:
            log.warning("KernelBenchmark skipped: %s", e)
            self.skipped = str(e)
        except Exception as e:  # the benchmark must never cost the user the trained model
            log.exception("KernelBenchmark failed (training outputs are unaffected): %s", e)

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
        metrics.update(whole_model_metrics(res))
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
            lg.save()
        md = self.output_dir / "kernel_bench.md"
        status = "PASS" if res["exactness"]["ok"] else f"FAIL {res['exactness']['failures'][:3]}"
        log.info("KernelBenchmark: bit-exact %s; %s; details in %s", status, whole_model_headline(res), md)


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
    if "whole_model" in res or "whole_model_error" in res:
        try:
            parts.append(whole_model_headline(res))
        except (KeyError, TypeError, ZeroDivisionError) as e:  # the run summary must still be written
            parts.append(f"whole model: unreadable result ({type(e).__name__}: {e})")
    return "; ".join(parts) + " (details: kernel_bench.md)"


BASELINES = ("FP16", "FP32")


def _own(wm: dict) -> str | None:
    """The trained model's label in the whole-model result (the one that is not a runtime baseline)."""
    labels = {k for t in [*wm.get("insn", {}).values(), wm.get("wall", {})] for k in t}
    return next((k for k in sorted(labels) if k not in BASELINES), None)


def whole_model_headline(res: dict) -> str:
    """The whole model through the integer runtime, its variant over the runtime's FP16 baseline (FP32 where FP16
    is absent): instructions per token under qemu (cortex-a76 first), else host ms per token over FP32."""
    wm = res.get("whole_model")
    if not wm:
        return f"whole model not measured ({res.get('whole_model_error', 'not run')})"
    own = _own(wm)
    insn, wall = wm.get("insn") or {}, wm.get("wall") or {}
    if insn:
        cpu = "cortex-a76" if "cortex-a76" in insn else next(iter(insn))
        t, what = insn[cpu], f"{cpu} insn/token"
    else:
        t, what = wall, "host ms/token"
    base = next((b for b in BASELINES if b in t and (insn or b == "FP32")), None)
    if own not in t or base is None:
        return "whole model: no comparable rows"
    sp = ", ".join(f"{ph} {t[base][ph] / t[own][ph]:.2f}x" for ph in ("prefill", "decode"))
    return f"whole model {own} vs runtime {base} ({what}, prefill {wm.get('prefill')}): {sp}"


def _key(label: str, own: str | None) -> str:
    return "model" if label == own else re.sub(r"[^A-Za-z0-9]+", "_", label)


def whole_model_metrics(res: dict) -> dict[str, float]:
    """Logger metrics of the whole-model table: per token costs of every timed or counted row (the trained variant
    as ``model``) and its instruction speedups over FP16."""
    wm = res.get("whole_model") or {}
    own, out = _own(wm), {}
    for cpu, table in (wm.get("insn") or {}).items():
        for label, v in table.items():
            for ph in ("prefill", "decode"):
                out[f"kernel/whole_insn_per_token_{cpu}_{ph}/{_key(label, own)}"] = v[ph]
        if own in table and "FP16" in table:
            for ph in ("prefill", "decode"):
                out[f"kernel/whole_insn_speedup_vs_fp16_{cpu}/{ph}"] = table["FP16"][ph] / table[own][ph]
    for label, v in (wm.get("wall") or {}).items():
        for ph in ("prefill", "decode") if v else ():  # None: not timed on this host (FP16 under SIMDe)
            out[f"kernel/whole_host_ms_per_token_{ph}/{_key(label, own)}"] = v[ph]
    return out
