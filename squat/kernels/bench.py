"""Kernel benchmark harness and the ``squat-bench`` CLI.

Every integer row is one fused quantized linear (``squat_qlinear_run``): float32 activations in, the activation
quantization, the integer GEMM the library picks for M, the dequantization, float32 out, just as the FP16 row is
fp16 in, the FP16 kernel for M (the GEMV at M = 1), fp16 out. Executed-instruction counts under
``qemu-aarch64 -cpu cortex-a76`` and ``-cpu max`` with the repo's TCG plugin (deterministic) when the aarch64
cross toolchain and qemu exist, and host wall clock side by side with torch fp32 and torch's int8 dynamic linear.
Beside the GEMM tables, the whole model through the integer runtime (Table IV layout, ``runtime_bench.measure``):
an export's own variant against the runtime's FP16 / FP32 baselines of the same weights, or every variant of the
paper's shapes with random weights.

    squat-bench --shape 512x512 --shape 1024x512 --shape 512x1024 -M 1 -M 128
    squat-bench --export DIR            # shapes and bit-exactness from an exported integer model, + the whole model
    python -m squat.kernels.bench --llama58m --out /tmp/kb   # the docs tables (also --gpt2-97m)
    python -m squat.kernels.bench --llama58m --no-wall --before-src /tmp/before/native_kernels   # + before/after
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from squat.kernels.build import ToolchainMissing, build, build_plugin, no_aslr, qemu_available
from squat.kernels.reference import int_gemm_ref, qlinear_ref

# LLaMA-58M: (name, N out, K in) per layer, 16 layers
LLAMA58M_LAYER = [("q_proj", 512, 512), ("k_proj", 512, 512), ("v_proj", 512, 512), ("o_proj", 512, 512),
                  ("gate_proj", 1024, 512), ("up_proj", 1024, 512), ("down_proj", 512, 1024)]
LLAMA58M_LAYERS = 16
# GPT2-97M: fused c_attn, attention c_proj, MLP c_fc and c_proj per layer, 12 layers
GPT2_97M_LAYER = [("c_attn", 2304, 768), ("attn.c_proj", 768, 768), ("c_fc", 3072, 768), ("mlp.c_proj", 768, 3072)]
GPT2_97M_LAYERS = 12
PAPER = {"llama_58m": (LLAMA58M_LAYER, LLAMA58M_LAYERS), "gpt2_97m": (GPT2_97M_LAYER, GPT2_97M_LAYERS)}

WEIGHT_BITS = {"FP32": 32, "FP16": 16, "W8A8-smull": 8, "W8A8": 8}
MKMP8, MKMP4 = "gemm_qs8_qs4x2_mkmp_4x8_neon", "gemm_qs4_qs4x2_mkmp_4x8_neon"
ORDER = ["FP32", "FP16", "W8A8-smull", "W8A8", "W4A8-MKMP", "W4A8", "mixed", "W4A4-MKMP", "W4A4"]


def variants(ratio: float = 0.5) -> dict[str, dict]:
    """label -> what runs: a float kernel (chosen for M) or a fused quantized linear (weight and activation
    widths, static sites; ``kernel`` pins one, else squat_qlinear_kernel chooses from the CPU and M)."""
    return {
        "FP32": {"float": "fp32"},
        "FP16": {"float": "fp16"},
        "W8A8-smull": {"wbits": 8, "abits": 8, "kernel": "gemm_qs8_qs8_4x4c8_neon"},
        "W8A8": {"wbits": 8, "abits": 8},
        "W4A8-MKMP": {"wbits": 4, "abits": 8, "kernel": MKMP8},
        "W4A8": {"wbits": 4, "abits": 8},
        "mixed": {"wbits": 4, "abits": 4, "abits_high": 8, "ratio": ratio},
        "W4A4-MKMP": {"wbits": 4, "abits": 4, "kernel": MKMP4},
        "W4A4": {"wbits": 4, "abits": 4},
    }


def _bench_args(v: dict) -> list[str]:
    if "float" in v:
        return ["--float", v["float"]]
    a = ["--qlinear", "--wbits", str(v["wbits"]), "--abits", str(v["abits"])]
    if "abits_high" in v:
        a += ["--abits-high", str(v["abits_high"]), "--ratio", str(v["ratio"])]
    if "kernel" in v:
        a += ["--kernel", v["kernel"]]
    return a


def _wbits(label: str) -> int:
    return WEIGHT_BITS.get(label, 4)


def ceiling(kernel: str) -> float:
    """MACs per instruction of a kernel's core instruction relative to fp16 fmla (8 MACs)."""
    if "f32" in kernel or "4x4c8_neon" in kernel or kernel == MKMP8:
        return 0.5
    if "f16" in kernel or kernel == MKMP4:
        return 1.0
    return 4.0 if "neoni8mm" in kernel else 2.0


# ---------------------------------------------------------------- instruction counts (qemu)
def qemu_run(bench: Path, plugin: Path, cpu: str, args: list[str], reps: int) -> tuple[int, str]:
    """Executed instructions of ``bench args --insn --reps reps`` under the counting plugin, and the kernel it named."""
    cmd = ["qemu-aarch64", "-cpu", cpu, "-d", "plugin", "-plugin", str(plugin), str(bench), *args, "--insn", "--reps", str(reps)]
    res = subprocess.run(no_aslr(cmd), capture_output=True, text=True, check=True)
    out = res.stderr + res.stdout
    count = int([l for l in out.splitlines() if l.startswith("insns:")][-1].split()[1])
    kern = next((l.split("=", 1)[1] for l in res.stdout.splitlines() if l.startswith("kernel=")), "")
    return count, kern


def _count_tasks(bench: Path, plugin: Path, tasks: list, jobs: int) -> dict:
    """tasks: (cpu, m, shape_name, label, args); per call = count(reps=2) - count(reps=1).
    Returns {cpu: {M: {shape: {label: count}}}} and the kernel names in res['kernel'][cpu][M][label]."""
    def run(t):
        cpu, m, name, label, args = t
        c2, kern = qemu_run(bench, plugin, cpu, args, 2)
        c1, _ = qemu_run(bench, plugin, cpu, args, 1)
        return t, c2 - c1, kern

    res: dict = {"count": {}, "kernel": {}}
    with ThreadPoolExecutor(jobs) as ex:
        for (cpu, m, name, label, _), c, kern in ex.map(run, tasks):
            res["count"].setdefault(cpu, {}).setdefault(str(m), {}).setdefault(name, {})[label] = c
            if kern:
                res["kernel"].setdefault(cpu, {}).setdefault(str(m), {})[label] = kern
    return res


def count_instructions(shapes: list[tuple[str, int, int]], ms: list[int], ratio: float,
                       cpus=("cortex-a76", "max"), labels: list[str] | None = None, jobs: int = 2) -> dict:
    """{"count": {cpu: {M: {shape: {label: instructions per call}}}}, "kernel": {cpu: {M: {label: name}}}}."""
    out_dir = build("aarch64-cross")
    tasks = []
    for cpu in cpus:
        for label, v in variants(ratio).items():
            if labels and label not in labels:
                continue
            for m in ms:
                if label == "mixed" and m == 1:
                    continue  # a decoded token is either 8-bit or 4-bit: see per_token_insn
                for name, n, k in shapes:
                    tasks.append((cpu, m, name, label, _bench_args(v) + ["-m", str(m), "-n", str(n), "-k", str(k)]))
    return _count_tasks(out_dir / "squat_bench", build_plugin(), tasks, jobs)


def before_variants(i8mm: bool, ratio: float) -> dict[str, list[str]]:
    """The rows of the kernels before the fused path (the squat_bench CLI of commit f38d784): its FP16 8x16 kernel,
    its integer kernels without activation quantization or dequantization ('... GEMM only', as published), and
    the same kernels with the fp32 quantize -> GEMM -> dequantize of its mixed entry point (ratio 1 = every token
    8-bit, 0 = every token 4-bit)."""
    w8 = "gemm_qs8_qs8_8x8c8_neoni8mm" if i8mm else "gemm_qs8_qs8_8x8c4_neondot"
    w4 = "gemm_qs8_qs4_8x8c8_neoni8mm" if i8mm else "gemm_qs8_qs4_8x8c4_neondot"
    return {
        "FP16": ["--kernel", "gemm_f16_f16_8x16_neonfp16arith"],
        "W8A8 GEMM only": ["--kernel", w8],
        "W4A8 GEMM only": ["--kernel", w4],
        "W8A8": ["--mixed", "1.0", "--k8", w8, "--k4", w4],
        "W4A8": ["--mixed", "1.0", "--k8", w4, "--k4", w4],
        "mixed": ["--mixed", str(ratio), "--k8", w4, "--k4", w4],
        "W4A4": ["--mixed", "0.0", "--k8", w4, "--k4", w4],
    }


def count_before(src: str | Path, shapes, ms, ratio: float, cpus=("cortex-a76", "max"), jobs: int = 2) -> dict:
    """Instruction counts of an older native_kernels tree (``src``, e.g. ``git archive f38d784 native_kernels``),
    built with its own Makefile into the cache, counted with the same plugin and method."""
    old = os.environ.get("SQUAT_NATIVE_DIR")
    os.environ["SQUAT_NATIVE_DIR"] = str(Path(src).resolve())
    try:
        bench = build("aarch64-cross") / "squat_bench"
    finally:
        if old is None:
            os.environ.pop("SQUAT_NATIVE_DIR")
        else:
            os.environ["SQUAT_NATIVE_DIR"] = old
    tasks = [(cpu, m, name, label, args + ["-m", str(m), "-n", str(n), "-k", str(k)])
             for cpu in cpus for label, args in before_variants(cpu != "cortex-a76", ratio).items()
             for m in ms for name, n, k in shapes]
    return _count_tasks(bench, build_plugin(), tasks, jobs)["count"]


# ---------------------------------------------------------------- wall clock (host)
def _torch_peers(w_f32: np.ndarray):
    import torch
    import torch.nn as nn

    n, k = w_f32.shape
    lin = nn.Linear(k, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w_f32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qlin = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
    wt = lin.weight.detach()
    f32 = lambda x: torch.nn.functional.linear(x, wt)  # noqa: E731
    return f32, qlin


def torch_backends() -> dict:
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "fp32_matmul": "aten linear -> " + ("oneDNN/mkldnn" if torch.backends.mkldnn.is_available() else "BLAS")
            + (f" (MKL {torch.backends.mkl.is_available()})"),
            "int8_dynamic": f"torch.ao quantize_dynamic qint8, quantized engine '{torch.backends.quantized.engine}'"}


def _time(fn, reps: int, min_s: float = 0.01) -> list[float]:
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_s / one))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return samples


class _Site:  # a static activation site with the fields squat.export.ActSite has
    def __init__(self, bits: int, scale: float):
        self.mode, self.bits, self.qmin, self.qmax = "static", bits, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        self.zero_point, self.scale = 0, scale


def _high_mask(m: int, ratio: float) -> np.ndarray:
    """round(ratio * M) high-precision rows spread evenly (squat_bench uses the same rule)."""
    nh = int(np.floor(ratio * m + 0.5))
    mask = np.zeros(m, bool)
    mask[[i * m // max(nh, 1) for i in range(nh)]] = True
    return mask


def wallclock(shapes: list[tuple[str, int, int]], ms: list[int], ratio: float, reps: int = 5,
              labels: list[str] | None = None, threads: int = 1) -> tuple[dict, dict]:
    """({M: {shape: {label: median seconds}}}, {M: {label: kernel}}) for our kernels (host build) and the torch
    peers, measured round-robin in this process so the ratios share the same machine state."""
    import torch

    from squat.kernels.binding import load

    lib = load()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    out: dict = {}
    kernels: dict = {}
    try:
        for m in ms:
            for name, n, k in shapes:
                w4 = rng.integers(-8, 8, (n, k)).astype(np.int8)
                w8 = rng.integers(-128, 128, (n, k)).astype(np.int8)
                wf = (w8.astype(np.float32) / 128.0).astype(np.float32)
                xf = rng.standard_normal((m, k)).astype(np.float32)
                sw = np.full(n, 0.01, np.float32)
                fns = {}
                for label, v in variants(ratio).items():
                    if labels and label not in labels:
                        continue
                    if "float" in v:
                        ki = lib.default(v["float"], m)
                        dt = np.float32 if v["float"] == "fp32" else np.float16
                        run, x = lib.make_runner(lib.pack_weights(ki, wf.astype(dt)), m), xf.astype(dt)
                        fns[label] = (lambda run=run, x=x: run(x))
                        kernels.setdefault(str(m), {})[label] = ki.name
                        continue
                    w = w8 if v["wbits"] == 8 else w4
                    p = lib.qlinear_pack(w, v["wbits"], sw, kernel=v.get("kernel"))
                    lo = _Site(v["abits"], 0.02)
                    hi = _Site(v["abits_high"], 0.002) if "abits_high" in v else None
                    run = lib.qlinear_runner(p, m, lo, hi, _high_mask(m, ratio) if hi else None, v.get("kernel"))
                    fns[label] = (lambda run=run: run(xf))
                    kernels.setdefault(str(m), {})[label] = run.kernel.name
                f32, qlin = _torch_peers(wf)
                xt = torch.from_numpy(xf)
                fns["torch fp32"] = lambda: f32(xt)
                fns["torch int8 dynamic"] = lambda: qlin(xt)
                samples = {lab: [] for lab in fns}
                with torch.no_grad():
                    for _ in range(reps):  # round-robin: every label measured in each round
                        for lab, fn in fns.items():
                            samples[lab] += _time(fn, 1)
                out.setdefault(str(m), {})[name] = {lab: statistics.median(s) for lab, s in samples.items()}
    finally:
        torch.set_num_threads(old_threads)
    return out, kernels


# ---------------------------------------------------------------- summaries
def per_token(table: dict, model_linears: list[tuple[str, int, int]], scale: float = 1.0) -> dict:
    """Sum a per-shape table over every linear of the model, divided by M: {M: {label: value per token}}."""
    res = {}
    for m, shapes in table.items():
        labels = set.intersection(*(set(v) for v in shapes.values()))
        res[m] = {lab: sum(shapes[name][lab] for name, _, _ in model_linears) / int(m) * scale for lab in labels}
    return res


def per_token_insn(table: dict, model_linears, ratio: float) -> dict:
    """per_token, plus the decode (M = 1) mixed row: a decoded token is 8-bit with probability ``ratio``, so its
    expected cost is ratio * W4A8 + (1 - ratio) * W4A4 (each measured at M = 1)."""
    res = per_token(table, model_linears)
    one = res.get("1")
    if one and "W4A8" in one and "W4A4" in one:
        one["mixed"] = ratio * one["W4A8"] + (1 - ratio) * one["W4A4"]
    return res


def weight_bytes_per_token(model_linears, m: int) -> dict:
    tot = sum(n * k for _, n, k in model_linears)
    return {lab: tot * _wbits(lab) / 8 / m for lab in ORDER}


def _label(lab: str, r: float, m: str) -> str:
    if lab != "mixed":
        return lab
    return (f"W4 A4:8 mixed, {r:g} of tokens 8-bit" if m != "1"
            else f"W4 A4:8 mixed: {r:g} x W4A8 + {1 - r:g} x W4A4 (a decoded token is one or the other)")


def markdown(result: dict) -> str:
    lines = []
    r = result.get("ratio", 0.5)
    for cpu, per_m in result.get("insn_per_token", {}).items():
        for m, row in per_m.items():
            fp16 = row.get("FP16")
            kern = result.get("insn", {}).get("kernel", {}).get(cpu, {}).get(m, {})
            lines += [f"\n### Executed instructions per token under qemu-aarch64 -cpu {cpu}, M = {m}\n",
                      "| path | kernel (chosen for M) | Minsn/token | speedup vs FP16 | ISA ceiling | % of ceiling | "
                      "weight MB read/token |",
                      "|---|---|---:|---:|---:|---:|---:|"]
            wb = weight_bytes_per_token(result["model_linears"], int(m))
            for lab in ORDER:
                if lab not in row:
                    continue
                sp = fp16 / row[lab] if fp16 else float("nan")
                if lab == "mixed" and m == "1":
                    k8, k4 = kern.get("W4A8", "?"), kern.get("W4A4", "?")
                    kname, ceil = f"`{k8}` / `{k4}`", ceiling(k8)
                else:
                    kname, ceil = f"`{kern.get(lab, '?')}`", ceiling(kern.get(lab, "f16"))
                lines.append(f"| {_label(lab, r, m)} | {kname} | {row[lab] / 1e6:.3f} | {sp:.2f}x | {ceil:.2f}x | "
                             f"{100 * sp / ceil:.0f}% | {wb[lab] / 1e6:.3f} |")
    before = result.get("before_per_token")
    if before:
        lines += _before_after(result, before)
    for m, row in result.get("ms_per_token", {}).items():
        tf = row.get("torch fp32")
        fp32 = row.get("FP32")
        kern = result.get("kernels_host", {}).get(m, {})
        lines += [f"\n### Wall clock on the host ({result.get('host', {}).get('target', '?')}), M = {m}, "
                  "estimated ms per token (sum over all linears / M), 1 thread\n",
                  "| path | kernel | ms/token | speedup vs torch fp32 | speedup vs our FP32 kernel |",
                  "|---|---|---:|---:|---:|"]
        for lab in ORDER + ["torch fp32", "torch int8 dynamic"]:
            if lab in row:
                lines.append(f"| {lab} | {kern.get(lab, '')} | {row[lab]:.3f} | {tf / row[lab]:.2f}x | "
                             f"{fp32 / row[lab]:.2f}x |")
    if "whole_model" in result:
        from squat.kernels import runtime_bench

        lines.append(runtime_bench.markdown(result["whole_model"]))
    elif "whole_model_error" in result:
        lines.append(f"\nWhole model through the integer runtime: not measured ({result['whole_model_error']})")
    ex = result.get("exactness")
    if ex:
        lines.append(f"\nBit-exactness on the exported weights: {'PASS' if ex['ok'] else 'FAIL'} "
                     f"({ex['checked']} checks, failures: {ex['failures'] or 'none'})")
    return "\n".join(lines) + "\n"


GEMM_ONLY = {"W8A8": "W8A8 GEMM only", "W4A8": "W4A8 GEMM only", "W4A4": "W4A8 GEMM only"}  # old W4A4 = W4A8 kernel


def _before_after(result: dict, before: dict) -> list[str]:
    """Speedups over FP16 before (published, GEMM only; recounted with quantization) and after, side by side."""
    lines = []
    for cpu, per_m in before.items():
        for m, b in per_m.items():
            a = result.get("insn_per_token", {}).get(cpu, {}).get(m)
            if not a or "FP16" not in b:
                continue
            lines += [f"\n### Before and after, qemu-aarch64 -cpu {cpu}, M = {m}: speedup over FP16 (instructions)\n",
                      "| path | before: GEMM only vs the old FP16 (published) | before: with quantization vs the old "
                      "FP16 | before: with quantization vs the new FP16 | after: fused, vs the new FP16 |",
                      "|---|---:|---:|---:|---:|"]
            lines.append(f"| FP16 Minsn/token | {b['FP16'] / 1e6:.3f} | {b['FP16'] / 1e6:.3f} | {a['FP16'] / 1e6:.3f} | "
                         f"{a['FP16'] / 1e6:.3f} |")
            for lab in ("W8A8", "W4A8", "mixed", "W4A4"):
                only = b.get(GEMM_ONLY[lab]) if lab in GEMM_ONLY else b.get(lab)  # the published mixed row had it
                cells = [f"{b['FP16'] / only:.2f}x" if only else "-",
                         f"{b['FP16'] / b[lab]:.2f}x" if lab in b else "-",
                         f"{a['FP16'] / b[lab]:.2f}x" if lab in b else "-",
                         f"{a['FP16'] / a[lab]:.2f}x" if lab in a else "-"]
                lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return lines


def host_info() -> dict:
    info = {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()}
    try:
        info["model"] = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                             if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return info


def benchmark(shapes, ms, ratio=0.5, model_linears=None, reps=5, insn=True, wall=True, labels=None,
              threads: int = 1, before_src: str | None = None) -> dict:
    """Benchmark distinct shapes; per-token tables use model_linears (default: the shapes themselves)."""
    from squat.kernels.binding import load

    model_linears = model_linears or shapes
    res: dict = {"shapes": shapes, "ms": ms, "ratio": ratio, "model_linears": model_linears, "host": host_info()}
    if wall:
        lib = load()
        res["host"]["target"] = lib.target
        res["torch"] = torch_backends()
        res["torch"]["threads_used"] = threads
        res["wallclock_s"], res["kernels_host"] = wallclock(shapes, ms, ratio, reps, labels, threads)
        res["ms_per_token"] = per_token(_expand(res["wallclock_s"], shapes, model_linears), model_linears, 1e3)
    if insn:
        if qemu_available():
            try:
                res["insn"] = count_instructions(shapes, ms, ratio, labels=labels)
                res["insn_per_token"] = {cpu: per_token_insn(_expand(t, shapes, model_linears), model_linears, ratio)
                                         for cpu, t in res["insn"]["count"].items()}
                res["insn_command"] = ("setarch $(uname -m) -R qemu-aarch64 -cpu {cortex-a76|max} -d plugin -plugin "
                                       "libinsncount.so squat_bench --insn {--qlinear ...|--float fp16} -m M -n N -k K "
                                       "--reps {1,2}  (count(2) - count(1))")
                if before_src:
                    bc = count_before(before_src, shapes, ms, ratio)
                    res["before_per_token"] = {cpu: per_token(_expand(t, shapes, model_linears), model_linears)
                                               for cpu, t in bc.items()}
            except ToolchainMissing as e:
                res["insn_skipped"] = str(e)
        else:
            res["insn_skipped"] = "aarch64 cross toolchain or qemu missing; install with: apt-get install -y gcc-aarch64-linux-gnu qemu-user"
    return res


def _expand(table: dict, shapes, model_linears) -> dict:
    """Map per-(N,K) measurements onto every model linear with the same shape."""
    by_dims = {(n, k): name for name, n, k in shapes}
    return {m: {name: t[by_dims[(n, k)]] for name, n, k in model_linears} for m, t in table.items()}


def check_exactness(lib, export_dir: str | Path, check_activations: dict | None, ratio: float) -> dict:
    """On the export's own weights and activation sites (trained scales and zero points), with real activations
    when given: every integer kernel that accepts a linear's widths against the int64 and torch integer matmuls of
    the site's quantized rows; and the fused quantized linear (the kernel the library picks for these rows) against
    the Python student's arithmetic (qlinear_ref), for token-adaptive inputs with a mask as well."""
    import torch

    from squat.export import ExportedModel

    exp = ExportedModel(export_dir)
    rng = np.random.default_rng(0)
    checked, failures = 0, []
    for name, lin in exp.linears.items():
        if lin.act.is_float:
            continue
        w, sw = lin.w.numpy(), lin.w_scale.numpy()
        bias = None if lin.bias is None else lin.bias.numpy()
        xf = check_activations.get(name) if check_activations else None
        xf = rng.standard_normal((16, lin.in_features)).astype(np.float32) if xf is None else np.asarray(xf, np.float32)
        xf = np.ascontiguousarray(xf.reshape(-1, lin.in_features))
        sites = [lin.act.low] + ([lin.act.high] if lin.act.high is not None else [])
        for site in sites:
            q = site.quantize(torch.from_numpy(xf))[0].numpy().astype(np.int8)
            ref = int_gemm_ref(q, w)
            tref = (torch.from_numpy(q).long() @ torch.from_numpy(w).long().T).int().numpy()
            for kin in lib.kernels.values():
                if (kin.kind != "int" or not kin.available or kin.act_bits < (4 if site.bits <= 4 else 8)
                        or kin.weight_bits < (4 if lin.weight_bits <= 4 else 8)):
                    continue
                got = lib.matmul(q, lib.pack_weights(kin, w))
                checked += 1
                if not (np.array_equal(got, ref) and np.array_equal(got, tref)):
                    failures.append(f"{name}:{kin.name}:a{site.bits}")
        p = lib.qlinear_pack(w, lin.weight_bits, sw, bias)
        masks = [None] + ([_high_mask(xf.shape[0], ratio)] if lin.act.high is not None else [])
        for mask in masks:
            high = lin.act.high if mask is not None else None
            run = lib.qlinear_runner(p, xf.shape[0], lin.act.low if high is not None else lin.act, high, mask)
            y = run(xf)
            yr, _ = qlinear_ref(xf, w, sw, bias, lin.act.low if high is not None else lin.act, high, mask)
            checked += 1
            if not np.array_equal(y.view(np.uint32), yr.view(np.uint32)):
                failures.append(f"{name}:qlinear:{run.kernel.name}{':mask' if mask is not None else ''}")
    return {"ok": not failures, "checked": checked, "failures": failures}


# ---------------------------------------------------------------- whole model (integer runtime)
def variant_label(export_dir: str | Path) -> str:
    """Table IV name of an export's quantization: ``W4A4``, or ``mixed W4 A4:8, ratio 0.5`` with a token policy."""
    from squat.export import ExportedModel

    q = ExportedModel(export_dir).manifest["quant"]
    tp = q.get("token_policy") or {}
    if tp.get("enabled"):
        return f"mixed W{q['weight_bits']} A{q['act_bits']}:{tp['high_bits']}, ratio {tp['ratio']:g}"
    return f"W{q['weight_bits']}A{q['act_bits']}"


def whole_model(exports: dict[str, Path], baseline_of: Path, work: str | Path, prefill: int, insn: bool = True,
                wall: bool = True, cpus: list[str] | None = None) -> dict:
    """The integer runtime's whole-model table (``runtime_bench.measure``): instructions per token under qemu (when
    the cross toolchain exists; ``cpus`` default cortex-a76 and max) and host ms per token of each export, beside
    the FP16 / FP32 baselines of ``baseline_of``."""
    from squat.kernels.runtime_bench import measure

    return measure(exports, Path(baseline_of), Path(work), prefill=prefill, cpus=cpus, insn=insn and qemu_available(),
                   wall=wall)


def paper_whole_model(model: str, work: str | Path, prefill: int = 128, insn: bool = True, wall: bool = True) -> dict:
    """:func:`whole_model` of every variant of the paper's ``model`` (``llama_58m``, ``gpt2_97m``) with random
    weights (:func:`squat.kernels.runtime_bench.paper_exports`)."""
    from squat.kernels.runtime_bench import paper_exports

    exports, baseline_of = paper_exports(model, Path(work))
    return whole_model(exports, baseline_of, work, prefill, insn, wall)


def _with_whole_model(res: dict, run) -> dict:
    """``res["whole_model"] = run()``; a failure is recorded in ``res["whole_model_error"]`` (the GEMM tables stand)."""
    try:
        res["whole_model"] = run()
    except Exception as e:  # any failure of the runtime path is reported beside the GEMM tables
        res["whole_model_error"] = f"{type(e).__name__}: {e}"
    return res


def run_kernel_benchmark(export_dir: str | Path, seq_len: int = 128, ratio: float = 0.5,
                         out_dir: str | Path | None = None, check_activations: dict | None = None,
                         reps: int = 3, insn: bool = True, whole: bool | dict = True) -> dict:
    """Build (cached), check bit-exactness on the exported weights (and real activations if given), benchmark
    every distinct linear shape at M = seq_len and M = 1, and (``whole``) the whole model through the integer
    runtime at prefill seq_len and decode (a dict: :func:`whole_model` keywords, e.g. fewer ``cpus``), write
    kernel_bench.json and kernel_bench.md to out_dir.
    Raises ToolchainMissing (one-line message with the install command) if the host toolchain is absent."""
    from squat.kernels.binding import load
    from squat.kernels.model import read_manifest

    lib = load()
    specs = read_manifest(export_dir)
    model_linears = [(n, s.out_features, s.in_features) for n, s in specs.items()]
    shapes, seen = [], set()
    for name, n, k in model_linears:
        if (n, k) not in seen:
            seen.add((n, k))
            shapes.append((f"{n}x{k}", n, k))
    res = benchmark(shapes, [seq_len, 1], ratio, model_linears, reps=reps, insn=insn)
    res["exactness"] = check_exactness(lib, export_dir, check_activations, ratio)
    if whole:
        with tempfile.TemporaryDirectory(prefix="squat_wm_") as work:  # bundles: a copy of the model per row
            kw = {"prefill": seq_len, "insn": insn, **(whole if isinstance(whole, dict) else {})}
            _with_whole_model(res, lambda: whole_model({variant_label(export_dir): Path(export_dir)}, Path(export_dir),
                                                       work, **kw))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "kernel_bench.json").write_text(json.dumps(res, indent=1, default=str))
        (out / "kernel_bench.md").write_text(markdown(res))
    return res


def _parse_shape(s: str) -> tuple[str, int, int]:
    n, k = (int(v) for v in s.lower().split("x"))
    return (f"{n}x{k}", n, k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="squat-bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", action="append", default=[], help="NxK (out x in), repeatable")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--llama58m", action="store_true",
                     help="LLaMA-58M linear shapes (16 layers), and the whole model of every variant (random weights)")
    src.add_argument("--gpt2-97m", action="store_true",
                     help="GPT2-97M linear shapes (12 layers), and the whole model of every variant (random weights)")
    src.add_argument("--export", help="exported model dir (manifest.json + quantized.safetensors)")
    ap.add_argument("-M", action="append", type=int, default=[], help="tokens per call, repeatable (the largest is "
                    "the whole model's prefill)")
    ap.add_argument("--ratio", type=float, default=0.5, help="share of 8-bit tokens in the mixed GEMM rows")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-insn", action="store_true", help="skip qemu instruction counts")
    ap.add_argument("--no-wall", action="store_true", help="skip host wall-clock timing")
    ap.add_argument("--no-whole-model", action="store_true", help="only the GEMM tables (no integer runtime)")
    ap.add_argument("--only", action="append", default=None, help="restrict to these row labels")
    ap.add_argument("--before-src", help="an older native_kernels tree to count beside this one (before/after table)")
    ap.add_argument("--out", help="write kernel_bench.json / kernel_bench.md here (and the whole model's work files)")
    a = ap.parse_args(argv)
    whole = not a.no_whole_model
    try:
        if a.export:
            res = run_kernel_benchmark(a.export, max(a.M or [128]), a.ratio, a.out, reps=a.reps, insn=not a.no_insn,
                                       whole=whole)
        else:
            shapes = [_parse_shape(s) for s in a.shape]
            model = None
            paper = "gpt2_97m" if a.gpt2_97m else "llama_58m" if a.llama58m or not shapes else None
            if paper:
                layer, n_layers = PAPER[paper]
                shapes = list({(n, k): (f"{n}x{k}", n, k) for _, n, k in layer}.values())
                model = [(f"l{i}.{name}", n, k) for i in range(n_layers) for name, n, k in layer]
            ms = a.M or [1, 128]
            res = benchmark(shapes, ms, a.ratio, model, reps=a.reps, insn=not a.no_insn,
                            wall=not a.no_wall, labels=a.only, before_src=a.before_src)
            if whole and (a.llama58m or a.gpt2_97m):
                with tempfile.TemporaryDirectory(prefix="squat_wm_") as tmp:  # exports and bundles, kept under --out
                    work = Path(a.out) / "whole_model" if a.out else Path(tmp)
                    _with_whole_model(res, lambda: paper_whole_model(paper, work, max(ms), not a.no_insn, not a.no_wall))
            if a.out:
                Path(a.out).mkdir(parents=True, exist_ok=True)
                (Path(a.out) / "kernel_bench.json").write_text(json.dumps(res, indent=1, default=str))
                (Path(a.out) / "kernel_bench.md").write_text(markdown(res))
    except ToolchainMissing as e:
        print(f"squat-bench: {e}")
        return 2
    print(markdown(res))
    if "torch" in res:
        print("torch peers:", json.dumps(res["torch"]))
    if "insn_skipped" in res:
        print("instruction counts skipped:", res["insn_skipped"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
