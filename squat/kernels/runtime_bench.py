"""Whole-model cost of an export through the integer runtime (the paper's Table IV): executed instructions per
token under ``qemu-aarch64`` (deterministic, the repo's TCG plugin), optionally split by op, and host ms per token,
for FP16 (the denominator: the same model dequantized, through the same runtime's FP16 baseline), FP32 (its FP32
baseline), W8A8, W4A8, mixed and W4A4, at prefill P and decode.

    python -m squat.kernels.runtime_bench --model llama_58m --prefill 128 --breakdown --out DIR
    python -m squat.kernels.runtime_bench --export run/export ...     (one trained export beside its baselines)

Counting: a bundle per variant is replayed by ``squat_rt_bench``; prefill = (count(1 rep) - count(0 reps)) / P
(loading the bundle cancels), decode per token = (count(P, 2 steps) - count(P, 0 steps)) / 2, i.e. at a context of
about P tokens. The prefill computes the last prompt token's logits, the ones generation needs (``squat_rt_bench``
without ``--out``); the head's cost per token shows in decode. ``--breakdown`` takes the same differences of per-block profiles (``tools/insnprof.c``) and attributes
each block to the runtime op (``rt_*`` functions, noinline) or library function it lies in; the op totals then
are the counts.
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

BASELINES = {"FP16": "fp16", "FP32": "fp32"}
VARIANTS = {"W8A8": "w8a8", "W4A8": "w4a8", "mixed": "w4a4_8", "W4A4": "w4a4"}


def paper_export(model: str, quant: str, out_dir: Path, seed: int = 0, float_o_proj: bool = False) -> Path:
    """The paper's shapes (``conf/model/<model>.yaml``, 16000-token vocabulary) with random weights, quantized
    with ``conf/quant/<quant>.yaml`` (LSQ) and calibrated on random tokens, exported to ``out_dir``.
    ``float_o_proj``: leave o_proj's input float, as the paper's public code does (``quant.sites.o_proj_input=false``)."""
    from omegaconf import OmegaConf

    from squat.config import CONF_DIR, ModelConfig
    from squat.export import export_model
    from squat.models import build_model
    from squat.quant.config import QuantConfig
    from squat.quant.prepare import calibrate, quantize_model

    torch.manual_seed(seed)
    mc = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(f"{CONF_DIR}/model/{model}.yaml")))
    qraw = OmegaConf.load(f"{CONF_DIR}/quant/{quant}.yaml")
    qc = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(QuantConfig.schema()), qraw, {"name": quant},
                                             {"sites": {"o_proj_input": not float_o_proj}}))
    m = build_model(mc, 16000, 0, attn_implementation="eager")
    quantize_model(m, qc, "lsq")
    calibrate(m, torch.randint(0, 16000, (2, 128)))
    export_model(m.eval(), out_dir)
    return out_dir


def paper_exports(model: str, work: Path, only: list[str] | None = None, float_o_proj: bool = False
                  ) -> tuple[dict[str, Path], Path]:
    """Exports of every Table IV variant (or ``only`` these labels) of the paper's ``model``, and the one the float
    baselines are taken from (the last: the same float weights in all, one seed). Labels get ' float o_proj' with
    ``float_o_proj``."""
    labels = [k for k in VARIANTS if not only or k in only]
    if not labels:
        raise ValueError(f"no variant among {only}; choose from {', '.join(VARIANTS)}")
    suffix = " float o_proj" if float_o_proj else ""
    exports = {k + suffix: paper_export(model, VARIANTS[k], Path(work) / f"{model}_{k}", float_o_proj=float_o_proj)
               for k in labels}
    return exports, exports[labels[-1] + suffix]


def _insns(exe: Path, plugin: Path, cpu: str, bundle: Path, prefill: int, decode: int, reps: int) -> int:
    return qemu_run(exe, plugin, cpu, [str(bundle), "--prefill", str(prefill), "--decode", str(decode)], reps)[0]


def count(bundle: Path, cpu: str, prefill: int) -> dict:
    """Instructions per token of one bundle: {"prefill": ..., "decode": ...}."""
    exe, plugin = build("aarch64-cross") / "squat_rt_bench", build_plugin()
    one = _insns(exe, plugin, cpu, bundle, prefill, 0, 1)
    return {"prefill": (one - _insns(exe, plugin, cpu, bundle, prefill, 0, 0)) / prefill,
            "decode": (_insns(exe, plugin, cpu, bundle, prefill, 2, 1) - one) / 2}


# ---------------------------------------------------------------- per-op breakdown (qemu block profile)
OPS = ["linears: quantized", "linears: float (GEMM, fp16 in/out)", "attention: scores", "attention: softmax",
       "attention: probs @ v", "quantize q/k/v, KV cache", "quantize probs", "norms", "RoPE", "MLP activation",
       "embedding", "residual adds", "other"]
_RT_OPS = {"rt_scores": 2, "rt_scores_f16": 2, "rt_scores_f32": 2, "rt_softmax": 3, "rt_pv": 4, "rt_pv_f16": 4,
           "rt_pv_f32": 4, "rt_group": 4, "rt_pv_out": 4, "rt_quant_q": 5, "rt_quant_k": 5, "rt_append_value": 5,
           "rt_append_kv_f16": 5, "rt_quant_probs": 6, "rt_rmsnorm": 7, "rt_layernorm": 7, "rt_rope": 8,
           "rt_silu_mul": 9, "rt_gelu": 9, "rt_embed": 10, "rt_residual": 11, "rt_lin_f16_in": 1, "rt_from_f16": 1,
           "rt_bias": 1, "rt_softmax64": 3, "rt_rmsnorm64": 7, "rt_layernorm64": 7, "rt_silu_mul64": 9, "rt_gelu64": 9}
_FLOAT_LIB = ("squat_gemm_f16", "squat_gemm_f32", "pack_lhs_blocked", "pack_lhs_f16_rows", "pack_lhs_f32_rows",
              "squat_fgemm_")


def _op_of(name: str, file: str) -> str:
    base = name.split(".")[0]
    if base in _RT_OPS:
        return OPS[_RT_OPS[base]]
    if file.startswith("gemm_f") or base.startswith(_FLOAT_LIB):
        return OPS[1]
    if file.startswith(("gemm_q", "pack_lhs_quant", "pack_rhs_q", "squat_qlinear")) or base.startswith(
            ("squat_qlinear", "squat_gemm_q", "squat_igemm", "pack_lhs_q", "sq_")):
        return OPS[0]
    return OPS[-1]


def _functions(exe: Path) -> list[tuple[int, int, str]]:
    """(start, end, op) of every function of the static binary; local symbols keep their object file (FILE
    entries of the symbol table), which tells the kernels' same-named static helpers apart."""
    import shutil

    tool = shutil.which("aarch64-linux-gnu-readelf") or "readelf"
    out = subprocess.run([tool, "-sW", str(exe)], capture_output=True, text=True, check=True).stdout
    funcs, file = [], ""
    for line in out.splitlines():
        f = line.split()
        if len(f) < 8:
            continue
        if f[3] == "FILE":
            file = f[7]
        elif f[3] == "FUNC" and int(f[2]) > 0:
            a = int(f[1], 16)
            funcs.append((a, a + int(f[2]), _op_of(f[7], file if f[4] == "LOCAL" else "")))
    return sorted(funcs)


def _profile_ops(exe: Path, funcs: list, cpu: str, args: list[str], reps: int, tmp: Path) -> dict[str, int]:
    import bisect

    from squat.kernels.disasm import _tb_profile

    prof = _tb_profile(exe, build_plugin().with_name("libinsnprof.so"), cpu, args, reps, tmp)
    starts = [f[0] for f in funcs]
    ops = dict.fromkeys(OPS, 0)
    for (addr, _), n in prof.items():
        i = bisect.bisect_right(starts, addr) - 1
        ops[funcs[i][2] if i >= 0 and addr < funcs[i][1] else OPS[-1]] += n
    return ops


def op_breakdown(bundle: Path, cpu: str, prefill: int) -> dict:
    """Instructions per token of one bundle by op: {"prefill": {op: n}, "decode": {op: n}} (same differences as
    :func:`count`; the sums over ops are the counts)."""
    import tempfile

    exe = build("aarch64-cross") / "squat_rt_bench"
    funcs = _functions(exe)
    with tempfile.TemporaryDirectory() as d:
        run = lambda dec, reps: _profile_ops(exe, funcs, cpu, [str(bundle), "--prefill", str(prefill), "--decode",
                                                                str(dec)], reps, Path(d))
        load, one, dec = run(0, 0), run(0, 1), run(2, 1)
    return {"prefill": {k: (one[k] - load[k]) / prefill for k in OPS},
            "decode": {k: (dec[k] - one[k]) / 2 for k in OPS}}


def wallclock(bundle: Path, prefill: int, reps: int = 3, decode: int = 16) -> dict:
    """Host ms per token (prefill of P tokens, then greedy decode) through the host build."""
    cmd = [str(build(host_preset()) / "squat_rt_bench"), str(bundle), "--prefill", str(prefill), "--decode",
           str(decode), "--reps", str(reps)]
    out = subprocess.run(no_aslr(cmd), capture_output=True, text=True, check=True).stdout
    kv = dict(item.split("=") for item in out.split())
    return {"prefill": float(kv["ms_per_prefill"]) / prefill, "decode": float(kv["ms_per_decode_token"])}


def bundles(exports: dict[str, Path], baseline_of: Path, work: Path, max_seq: int) -> dict[str, Path]:
    """One bundle per label: "FP16" and "FP32" (the baselines of ``baseline_of``), then each export's."""
    from squat.kernels.runtime import IntegerRuntime

    work.mkdir(parents=True, exist_ok=True)
    out = {}
    for label, exp in {**dict.fromkeys(BASELINES, baseline_of), **exports}.items():
        out[label] = work / f"{label}.bundle"
        IntegerRuntime(exp, max_seq=max_seq, bundle=out[label], baseline=BASELINES.get(label))
    return out


def _qemu_version() -> str:
    try:
        return subprocess.run(["qemu-aarch64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        return ""


def measure(exports: dict[str, Path], baseline_of: Path, out: Path, prefill: int = 128, cpus: list[str] | None = None,
            insn: bool = True, wall: bool = True, breakdown: bool = False) -> dict:
    """Whole-model Table IV of ``exports`` (label -> export folder) beside the FP16 and FP32 baselines of
    ``baseline_of``, bundles in ``out``. Returns {"prefill", "baseline": "FP16", "labels", "insn": {cpu: {label:
    {"prefill", "decode"}}}, "breakdown": {cpu: {label: {"prefill": {op: n}, "decode": {op: n}}}} (with
    ``breakdown``), "wall": {label: {"prefill", "decode"}} (host ms/token; FP16 None on an x86 host, where SIMDe
    emulates fp16 arithmetic element by element), "host", "qemu"}. Instruction counts
    need qemu-aarch64 and the cross toolchain; ``cpus`` defaults to cortex-a76 and max."""
    out = Path(out)
    bs = bundles(exports, baseline_of, out, prefill + 17)  # room for the 16 timed decode steps
    res = {"prefill": prefill, "baseline": "FP16", "labels": list(bs), "insn": {}, "breakdown": {}, "wall": {},
           "host": platform.machine(), "qemu": _qemu_version()}
    if insn or breakdown:
        for cpu in cpus or ["cortex-a76", "max"]:
            if breakdown:
                res["breakdown"][cpu] = {k: op_breakdown(b, cpu, prefill) for k, b in bs.items()}
                res["insn"][cpu] = {k: {w: sum(v[w].values()) for w in ("prefill", "decode")}
                                    for k, v in res["breakdown"][cpu].items()}
            else:
                res["insn"][cpu] = {k: count(b, cpu, prefill) for k, b in bs.items()}
    if wall:  # SIMDe has no fp16 arithmetic: each fp16 fma is a scalar C call, so the host's FP16 time means nothing
        emulated = host_preset() == "x86-simde"
        res["wall"] = {k: None if emulated and k == "FP16" else wallclock(b, prefill) for k, b in bs.items()}
    return res


def markdown(res: dict) -> str:
    """Markdown tables of a :func:`measure` result: speedups over FP16 (the paper's Table IV) per qemu CPU, host
    ms per token, and the per-op breakdown when measured."""
    lines = []
    base = res.get("baseline", "FP16")
    for cpu, table in res["insn"].items():
        lines += [f"\n### Whole model, instructions per token, qemu-aarch64 -cpu {cpu}, prefill {res['prefill']} / decode\n",
                  f"| variant | prefill insn/token | speedup vs {base} | decode insn/token | speedup vs {base} |",
                  "|---|---:|---:|---:|---:|"]
        b = table[base]
        for label, v in table.items():
            lines.append(f"| {label} | {v['prefill']:.4g} | {b['prefill'] / v['prefill']:.2f}x | "
                         f"{v['decode']:.4g} | {b['decode'] / v['decode']:.2f}x |")
    for cpu, table in res.get("breakdown", {}).items():
        for phase in ("prefill", "decode"):
            labels = list(table)
            lines += [f"\n### Where the instructions go, qemu-aarch64 -cpu {cpu}, {phase}"
                      f"{' ' + str(res['prefill']) if phase == 'prefill' else ''} (thousand instructions per token)\n",
                      "| op | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
            for op in OPS:
                row = [table[k][phase][op] for k in labels]
                if any(row):
                    lines.append(f"| {op} | " + " | ".join(f"{v / 1e3:.1f}" for v in row) + " |")
            lines.append("| **total** | " + " | ".join(f"**{sum(table[k][phase].values()) / 1e3:.1f}**"
                                                     for k in labels) + " |")
    if res.get("wall"):
        lines += [f"\n### Whole model, host ms per token ({res['host']})\n", "| variant | prefill | decode |",
                  "|---|---:|---:|"]
        lines += [f"| {k} | {v['prefill']:.4f} | {v['decode']:.4f} |" if v else
                  f"| {k} | n/a (fp16 emulated by SIMDe) | n/a |" for k, v in res["wall"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m squat.kernels.runtime_bench", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", choices=["llama_58m", "gpt2_97m", "tiny_llama", "tiny_gpt2"],
                     help="the paper's shapes with random weights, every variant")
    src.add_argument("--export", help="one trained export (measured beside its own FP16 and FP32 baselines)")
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--cpu", action="append", default=None, help="qemu CPU models (default cortex-a76 and max)")
    ap.add_argument("--only", action="append", default=None, help="restrict to these variant labels")
    ap.add_argument("--breakdown", action="store_true", help="instructions per token by op (block profiles)")
    ap.add_argument("--float-o-proj", action="store_true",
                    help="--model: leave o_proj's input float, as the paper's public code does (labels get ' float o_proj')")
    ap.add_argument("--no-insn", action="store_true")
    ap.add_argument("--no-wall", action="store_true")
    ap.add_argument("--out", required=True, help="work folder: exports, bundles, runtime_bench.json/.md")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.export:
        exports = {"export": Path(a.export)}
        baseline_of = Path(a.export)
    else:
        exports, baseline_of = paper_exports(a.model, out, a.only, a.float_o_proj)
    res = measure(exports, baseline_of, out, a.prefill, a.cpu, insn=not a.no_insn, wall=not a.no_wall,
                  breakdown=a.breakdown and not a.no_insn)
    res["model"] = a.model or str(a.export)
    (out / "runtime_bench.json").write_text(json.dumps(res, indent=1))
    (out / "runtime_bench.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
