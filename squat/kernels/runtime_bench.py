"""Whole-model cost of an export through the integer runtime (Table IV layout): executed instructions per token
under ``qemu-aarch64`` (deterministic, the repo's TCG plugin) and host ms per token, for FP32 (the same model
through the same runtime's baseline), W8A8, W4A8, mixed and W4A4, at prefill P and decode.

    python -m squat.kernels.runtime_bench --model llama_58m --prefill 128 --cpu cortex-a76 --out DIR
    python -m squat.kernels.runtime_bench --export run/export ...     (one trained export beside its FP32 baseline)

Counting: a bundle per variant is replayed by ``squat_rt_bench``; prefill = count(2 reps) - count(1 rep) (setup
cancels), decode per token = (count(P, 2 steps) - count(P, 0 steps)) / 2, i.e. at a context of about P tokens.
FP16 is not measured here (the runtime's float parts are FP32 only).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
from pathlib import Path

import torch

from squat.kernels.bench import qemu_run
from squat.kernels.build import build, build_plugin, host_preset, no_aslr

VARIANTS = {"W8A8": "w8a8", "W4A8": "w4a8", "mixed": "w4a4_8", "W4A4": "w4a4"}


def paper_export(model: str, quant: str, out_dir: Path, seed: int = 0) -> Path:
    """The paper's shapes (``conf/model/<model>.yaml``, 16000-token vocabulary) with random weights, quantized
    with ``conf/quant/<quant>.yaml`` (LSQ) and calibrated on random tokens, exported to ``out_dir``."""
    from omegaconf import OmegaConf

    from squat.config import CONF_DIR, ModelConfig
    from squat.export import export_model
    from squat.models import build_model
    from squat.quant.config import QuantConfig
    from squat.quant.prepare import calibrate, quantize_model

    torch.manual_seed(seed)
    mc = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(f"{CONF_DIR}/model/{model}.yaml")))
    qraw = OmegaConf.load(f"{CONF_DIR}/quant/{quant}.yaml")
    qc = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(QuantConfig.schema()), qraw, {"name": quant}))
    m = build_model(mc, 16000, 0, attn_implementation="eager")
    quantize_model(m, qc, "lsq")
    calibrate(m, torch.randint(0, 16000, (2, 128)))
    export_model(m.eval(), out_dir)
    return out_dir


def _insns(exe: Path, plugin: Path, cpu: str, bundle: Path, prefill: int, decode: int, reps: int) -> int:
    return qemu_run(exe, plugin, cpu, [str(bundle), "--prefill", str(prefill), "--decode", str(decode)], reps)[0]


def count(bundle: Path, cpu: str, prefill: int) -> dict:
    """Instructions per token of one bundle: {"prefill": ..., "decode": ...}."""
    exe, plugin = build("aarch64-cross") / "squat_rt_bench", build_plugin()
    one = _insns(exe, plugin, cpu, bundle, prefill, 0, 1)
    return {"prefill": (_insns(exe, plugin, cpu, bundle, prefill, 0, 2) - one) / prefill,
            "decode": (_insns(exe, plugin, cpu, bundle, prefill, 2, 1) - one) / 2}


def wallclock(bundle: Path, prefill: int, reps: int = 3, decode: int = 16) -> dict:
    """Host ms per token (prefill of P tokens, then greedy decode) through the host build."""
    cmd = [str(build(host_preset()) / "squat_rt_bench"), str(bundle), "--prefill", str(prefill), "--decode",
           str(decode), "--reps", str(reps)]
    out = subprocess.run(no_aslr(cmd), capture_output=True, text=True, check=True).stdout
    kv = dict(item.split("=") for item in out.split())
    return {"prefill": float(kv["ms_per_prefill"]) / prefill, "decode": float(kv["ms_per_decode_token"])}


def bundles(exports: dict[str, Path], fp32_of: Path, work: Path, max_seq: int) -> dict[str, Path]:
    """One bundle per variant label, plus "FP32" (the baseline of ``fp32_of``)."""
    from squat.kernels.runtime import IntegerRuntime

    out = {}
    for label, exp in {"FP32": fp32_of, **exports}.items():
        out[label] = work / f"{label}.bundle"
        IntegerRuntime(exp, max_seq=max_seq, bundle=out[label], baseline="fp32" if label == "FP32" else None)
    return out


def markdown(res: dict) -> str:
    lines = []
    for what, table in (("instructions per token, qemu-aarch64 -cpu " + c, t) for c, t in res["insn"].items()):
        lines += [f"\n### Whole model, {what}, prefill {res['prefill']} / decode\n",
                  "| variant | prefill insn/token | speedup vs FP32 | decode insn/token | speedup vs FP32 |",
                  "|---|---:|---:|---:|---:|"]
        base = table["FP32"]
        for label, v in table.items():
            lines.append(f"| {label} | {v['prefill']:.4g} | {base['prefill'] / v['prefill']:.2f}x | "
                         f"{v['decode']:.4g} | {base['decode'] / v['decode']:.2f}x |")
    if res.get("wall"):
        lines += [f"\n### Whole model, host ms per token ({res['host']})\n", "| variant | prefill | decode |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['prefill']:.4f} | {v['decode']:.4f} |" for k, v in res["wall"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m squat.kernels.runtime_bench", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", choices=["llama_58m", "gpt2_97m", "tiny_llama", "tiny_gpt2"],
                     help="the paper's shapes with random weights, every variant")
    src.add_argument("--export", help="one trained export (measured beside its own FP32 baseline)")
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--cpu", action="append", default=None, help="qemu CPU models (default cortex-a76 and max)")
    ap.add_argument("--only", action="append", default=None, help="restrict to these variant labels")
    ap.add_argument("--no-insn", action="store_true")
    ap.add_argument("--no-wall", action="store_true")
    ap.add_argument("--out", required=True, help="work folder: exports, bundles, runtime_bench.json/.md")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    max_seq = a.prefill + 17  # room for the 16 timed decode steps
    if a.export:
        exports = {"export": Path(a.export)}
        fp32_of = Path(a.export)
    else:
        labels = [k for k in VARIANTS if not a.only or k in a.only]
        exports = {k: paper_export(a.model, VARIANTS[k], out / f"export_{k}") for k in labels}
        fp32_of = exports[labels[-1]]
    bs = bundles(exports, fp32_of, out, max_seq)
    res = {"prefill": a.prefill, "insn": {}, "wall": {}, "host": platform.machine()}
    if not a.no_insn:
        for cpu in a.cpu or ["cortex-a76", "max"]:
            res["insn"][cpu] = {k: count(b, cpu, a.prefill) for k, b in bs.items()}
    if not a.no_wall:
        res["wall"] = {k: wallclock(b, a.prefill) for k, b in bs.items()}
    (out / "runtime_bench.json").write_text(json.dumps(res, indent=1))
    (out / "runtime_bench.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
