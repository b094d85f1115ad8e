"""Kernel benchmark harness and the ``squat-bench`` CLI.

Wall-clock (host build, one process, side by side with torch fp32 matmul and torch's int8 dynamic quantized
linear) and, when the aarch64 cross toolchain and qemu exist, executed-instruction counts under
``qemu-aarch64 -cpu cortex-a76`` and ``-cpu max`` with the repo's TCG plugin (deterministic).

    squat-bench --shape 512x512 --shape 1024x512 --shape 512x1024 -M 1 -M 128
    squat-bench --export DIR            # shapes and bit-exactness from an exported integer model
    python -m squat.kernels.bench --llama58m --out /tmp/kb   # the docs tables
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from squat.kernels.build import ToolchainMissing, build, build_plugin, qemu_available
from squat.kernels.reference import int_gemm_ref, mixed_linear_ref

# LLaMA-58M: (name, N out, K in) per layer, 16 layers
LLAMA58M_LAYER = [("q_proj", 512, 512), ("k_proj", 512, 512), ("v_proj", 512, 512), ("o_proj", 512, 512),
                  ("gate_proj", 1024, 512), ("up_proj", 1024, 512), ("down_proj", 512, 1024)]
LLAMA58M_LAYERS = 16

# MACs per instruction of each path's core instruction relative to fp16 fmla (8 MACs): the ISA ceiling.
CEILING = {"FP32": 0.5, "FP16": 1.0, "W8A8-smull": 0.5, "W8A8": 2.0, "W4A8": 2.0, "W4A4": 2.0, "mixed": 2.0,
           "W4A8-MKMP": 0.5, "W4A4-MKMP": 1.0, "mixed-MKMP": 0.75}
WEIGHT_BITS = {"FP32": 32, "FP16": 16, "W8A8-smull": 8, "W8A8": 8}

DOT = {"W8A8": "gemm_qs8_qs8_8x8c4_neondot", "W4A8": "gemm_qs8_qs4_8x8c4_neondot"}
MMLA = {"W8A8": "gemm_qs8_qs8_8x8c8_neoni8mm", "W4A8": "gemm_qs8_qs4_8x8c8_neoni8mm"}
MKMP8, MKMP4 = "gemm_qs8_qs4x2_mkmp_4x8_neon", "gemm_qs4_qs4x2_mkmp_4x8_neon"


def variants(i8mm: bool) -> dict[str, dict]:
    """label -> what runs. 'k' is a kernel name; mixed rows name the 8-bit and 4-bit group kernels."""
    best = MMLA if i8mm else DOT
    return {
        "FP32": {"k": "gemm_f32_f32_8x8_neon", "act": "f32"},
        "FP16": {"k": "gemm_f16_f16_8x16_neonfp16arith", "act": "f16"},
        "W8A8": {"k": best["W8A8"], "act": 8},
        "W8A8-smull": {"k": "gemm_qs8_qs8_4x4c8_neon", "act": 8},
        "W4A8": {"k": best["W4A8"], "act": 8},
        "W4A8-MKMP": {"k": MKMP8, "act": 8},
        "mixed": {"k8": best["W4A8"], "k4": best["W4A8"]},
        "mixed-MKMP": {"k8": MKMP8, "k4": MKMP4},
        "W4A4": {"k": best["W4A8"], "act": 4},
        "W4A4-MKMP": {"k": MKMP4, "act": 4},
    }


def _wbits(label: str) -> int:
    return WEIGHT_BITS.get(label, 4)


# ---------------------------------------------------------------- instruction counts (qemu)
def _qemu_count(bench: Path, plugin: Path, cpu: str, args: list[str], reps: int) -> int:
    cmd = ["qemu-aarch64", "-cpu", cpu, "-d", "plugin", "-plugin", str(plugin), str(bench), *args, "--insn", "--reps", str(reps)]
    if shutil.which("setarch"):  # no ASLR: libc's alignment-dependent paths (memcpy) then run identically
        cmd = ["setarch", platform.machine(), "-R", *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = [l for l in (res.stderr + res.stdout).splitlines() if l.startswith("insns:")]
    return int(line[-1].split()[1])


def count_instructions(shapes: list[tuple[str, int, int]], ms: list[int], ratio: float,
                       cpus=("cortex-a76", "max"), labels: list[str] | None = None, jobs: int = 2) -> dict:
    """{cpu: {M: {shape_name: {label: instructions per call}}}}; per call = count(reps=2) - count(reps=1)."""
    out_dir = build("aarch64-cross")
    plugin = build_plugin()
    bench = out_dir / "squat_bench"
    tasks = []
    for cpu in cpus:
        for label, v in variants(cpu != "cortex-a76").items():
            if labels and label not in labels:
                continue
            for m in ms:
                for name, n, k in shapes:
                    dims = ["-m", str(m), "-n", str(n), "-k", str(k)]
                    args = (["--mixed", str(ratio), "--k8", v["k8"], "--k4", v["k4"]] if "k8" in v
                            else ["--kernel", v["k"]]) + dims
                    tasks.append((cpu, m, name, label, args))

    def run(t):
        cpu, m, name, label, args = t
        return t, _qemu_count(bench, plugin, cpu, args, 2) - _qemu_count(bench, plugin, cpu, args, 1)

    res: dict = {}
    with ThreadPoolExecutor(jobs) as ex:
        for (cpu, m, name, label, _), c in ex.map(run, tasks):
            res.setdefault(cpu, {}).setdefault(str(m), {}).setdefault(name, {})[label] = c
    return res


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


def _time(fn, reps: int, min_s: float = 0.01) -> float:
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


def wallclock(shapes: list[tuple[str, int, int]], ms: list[int], ratio: float, reps: int = 5,
              labels: list[str] | None = None, threads: int = 1) -> dict:
    """{M: {shape: {label: median seconds}}} for our kernels (host build) and the torch peers, measured
    round-robin in this process so the ratios share the same machine state."""
    import torch

    from squat.kernels.binding import load

    lib = load()
    i8mm = lib.kernels[MMLA["W8A8"]].available
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    out: dict = {}
    try:
        for m in ms:
            for name, n, k in shapes:
                w4 = rng.integers(-8, 8, (n, k)).astype(np.int8)
                w8 = rng.integers(-128, 128, (n, k)).astype(np.int8)
                wf = (w8.astype(np.float32) / 128.0).astype(np.float32)
                xf = rng.standard_normal((m, k)).astype(np.float32)
                x8 = rng.integers(-128, 128, (m, k)).astype(np.int8)
                x4 = rng.integers(-8, 8, (m, k)).astype(np.int8)
                imp = rng.random(m).astype(np.float32)
                sw = np.full(n, 0.01, np.float32)
                fns = {}
                for label, v in variants(i8mm).items():
                    if labels and label not in labels:
                        continue
                    if "k8" in v:
                        p8 = lib.pack_weights(v["k8"], w4)
                        p4 = lib.pack_weights(v["k4"], w4)
                        fns[label] = (lambda p8=p8, p4=p4: lib.mixed_linear(xf, p8, p4, sw, ratio, importance=imp))
                        continue
                    if v["act"] == "f32":
                        p, x = lib.pack_weights(v["k"], wf), xf
                    elif v["act"] == "f16":
                        p, x = lib.pack_weights(v["k"], wf.astype(np.float16)), xf.astype(np.float16)
                    else:
                        p, x = lib.pack_weights(v["k"], w8 if _wbits(label) == 8 else w4), (x8 if v["act"] == 8 else x4)
                    run = lib.make_runner(p, m)
                    fns[label] = (lambda run=run, x=x: run(x))
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
    return out


# ---------------------------------------------------------------- summaries
def per_token(table: dict, model_linears: list[tuple[str, int, int]], scale: float = 1.0) -> dict:
    """Sum a per-shape table over every linear of the model, divided by M: {M: {label: value per token}}."""
    res = {}
    for m, shapes in table.items():
        labels = set.intersection(*(set(v) for v in shapes.values()))
        res[m] = {lab: sum(shapes[name][lab] for name, _, _ in model_linears) / int(m) * scale for lab in labels}
    return res


def weight_bytes_per_token(model_linears, m: int) -> dict:
    tot = sum(n * k for _, n, k in model_linears)
    return {lab: tot * _wbits(lab) / 8 / m for lab in CEILING}


def markdown(result: dict) -> str:
    lines = []
    order = ["FP32", "FP16", "W8A8-smull", "W8A8", "W4A8-MKMP", "W4A8", "mixed-MKMP", "mixed", "W4A4-MKMP", "W4A4"]
    r = result.get("ratio", 0.5)
    mixed_names = {"mixed": f"W4 A4:8 mixed, {r:g} of tokens 8-bit", "mixed-MKMP": f"W4 A4:8 mixed MKMP, {r:g} 8-bit"}
    name = lambda lab: mixed_names.get(lab, lab)  # noqa: E731
    for cpu, per_m in result.get("insn_per_token", {}).items():
        for m, row in per_m.items():
            fp16 = row.get("FP16")
            lines += [f"\n### Executed instructions per token under qemu-aarch64 -cpu {cpu}, M = {m}\n",
                      "| path | kernel | Minsn/token | speedup vs FP16 | ISA ceiling | % of ceiling | weight MB read/token |",
                      "|---|---|---:|---:|---:|---:|---:|"]
            var = variants(cpu != "cortex-a76")
            wb = weight_bytes_per_token(result["model_linears"], int(m))
            for lab in order:
                if lab not in row:
                    continue
                sp = fp16 / row[lab] if fp16 else float("nan")
                kern = var[lab].get("k") or f"{var[lab]['k8']} + {var[lab]['k4']}"
                ceil = CEILING[lab] * (2.0 if (cpu != "cortex-a76" and lab in ("W8A8", "W4A8", "W4A4", "mixed")) else 1.0)
                lines.append(f"| {name(lab)} | `{kern}` | {row[lab] / 1e6:.3f} | {sp:.2f}x | {ceil:.2f}x | "
                             f"{100 * sp / ceil:.0f}% | {wb[lab] / 1e6:.3f} |")
    for m, row in result.get("ms_per_token", {}).items():
        tf = row.get("torch fp32")
        fp32 = row.get("FP32")
        lines += [f"\n### Wall clock on the host ({result.get('host', {}).get('target', '?')}), M = {m}, "
                  "estimated ms per token (sum over all linears / M), 1 thread\n",
                  "| path | ms/token | speedup vs torch fp32 | speedup vs our FP32 kernel |", "|---|---:|---:|---:|"]
        for lab in order + ["torch fp32", "torch int8 dynamic"]:
            if lab in row:
                lines.append(f"| {name(lab)} | {row[lab]:.3f} | {tf / row[lab]:.2f}x | {fp32 / row[lab]:.2f}x |")
    ex = result.get("exactness")
    if ex:
        lines.append(f"\nBit-exactness on the exported weights: {'PASS' if ex['ok'] else 'FAIL'} "
                     f"({ex['checked']} kernel x linear checks, failures: {ex['failures'] or 'none'})")
    return "\n".join(lines) + "\n"


def host_info() -> dict:
    info = {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()}
    try:
        info["model"] = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                             if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return info


def benchmark(shapes, ms, ratio=0.5, model_linears=None, reps=5, insn=True, wall=True, labels=None,
              threads: int = 1) -> dict:
    """Benchmark distinct shapes; per-token tables use model_linears (default: the shapes themselves)."""
    from squat.kernels.binding import load

    model_linears = model_linears or shapes
    res: dict = {"shapes": shapes, "ms": ms, "ratio": ratio, "model_linears": model_linears, "host": host_info()}
    if wall:
        lib = load()
        res["host"]["target"] = lib.target
        res["torch"] = torch_backends()
        res["torch"]["threads_used"] = threads
        res["kernels_host"] = {lab: (v.get("k") or [v["k8"], v["k4"]])
                               for lab, v in variants(lib.kernels[MMLA["W8A8"]].available).items()}
        res["wallclock_s"] = wallclock(shapes, ms, ratio, reps, labels, threads)
        res["ms_per_token"] = per_token(_expand(res["wallclock_s"], shapes, model_linears), model_linears, 1e3)
    if insn:
        if qemu_available():
            try:
                res["insn"] = count_instructions(shapes, ms, ratio, labels=labels)
                res["insn_per_token"] = {cpu: per_token(_expand(t, shapes, model_linears), model_linears)
                                         for cpu, t in res["insn"].items()}
                res["insn_command"] = ("setarch $(uname -m) -R qemu-aarch64 -cpu {cortex-a76|max} -d plugin -plugin libinsncount.so "
                                       "squat_bench --insn --kernel K -m M -n N -k K --reps {1,2}  (count(2) - count(1))")
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
    """Every kernel that accepts a linear's precision vs the numpy int64 reference and torch's integer matmul."""
    import torch

    from squat.kernels.model import load_int_weights, read_manifest

    specs, tensors = read_manifest(export_dir), load_int_weights(export_dir)
    rng = np.random.default_rng(0)
    checked, failures = 0, []
    for name, s in specs.items():
        w = tensors[name]["w"]
        xf = check_activations.get(name) if check_activations else None
        xf = rng.standard_normal((16, s.in_features)).astype(np.float32) if xf is None else np.asarray(xf, np.float32)
        xf = xf.reshape(-1, s.in_features)
        for ab in (8, 4):
            q, _ = lib.quantize_group(xf, 127 if ab == 8 else 7)
            ref = int_gemm_ref(q, w)
            tref = (torch.from_numpy(q).long() @ torch.from_numpy(w).long().T).int().numpy()
            for kin in lib.kernels.values():
                if kin.kind != "int" or not kin.available or kin.act_bits < ab or (kin.weight_bits == 4 and s.weight_bits != 4):
                    continue
                got = lib.matmul(q, lib.pack_weights(kin, w))
                checked += 1
                if not (np.array_equal(got, ref) and np.array_equal(got, tref)):
                    failures.append(f"{name}:{kin.name}:a{ab}")
        if s.weight_bits == 4:
            for k8, k4 in ((lib.default("w4a8").name, lib.default("w4a4").name), (MKMP8, MKMP4)):
                y, mask, _ = lib.mixed_linear(xf, lib.pack_weights(k8, w), lib.pack_weights(k4, w),
                                              tensors[name]["w_scale"], ratio, importance=np.abs(xf).max(1))
                yr, mr, _ = mixed_linear_ref(xf, w, tensors[name]["w_scale"], ratio, importance=np.abs(xf).max(1))
                checked += 1
                if not (np.array_equal(y, yr) and np.array_equal(mask, mr)):
                    failures.append(f"{name}:mixed:{k8}+{k4}")
    return {"ok": not failures, "checked": checked, "failures": failures}


def run_kernel_benchmark(export_dir: str | Path, seq_len: int = 128, ratio: float = 0.5,
                         out_dir: str | Path | None = None, check_activations: dict | None = None,
                         reps: int = 3, insn: bool = True) -> dict:
    """Build (cached), check bit-exactness on the exported weights (and real activations if given), benchmark
    every distinct linear shape at M = seq_len and M = 1, write kernel_bench.json and kernel_bench.md to out_dir.
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
    ap.add_argument("--llama58m", action="store_true", help="LLaMA-58M linear shapes (16 layers)")
    ap.add_argument("--export", help="exported model dir (manifest.json + quantized.safetensors)")
    ap.add_argument("-M", action="append", type=int, default=[], help="tokens per call, repeatable")
    ap.add_argument("--ratio", type=float, default=0.5, help="share of 8-bit tokens in the mixed rows")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-insn", action="store_true", help="skip qemu instruction counts")
    ap.add_argument("--no-wall", action="store_true", help="skip host wall-clock timing")
    ap.add_argument("--only", action="append", default=None, help="restrict to these row labels")
    ap.add_argument("--out", help="write kernel_bench.json / kernel_bench.md here")
    a = ap.parse_args(argv)
    try:
        if a.export:
            res = run_kernel_benchmark(a.export, (a.M or [128])[0], a.ratio, a.out, reps=a.reps, insn=not a.no_insn)
        else:
            shapes = [_parse_shape(s) for s in a.shape]
            model = None
            if a.llama58m or not shapes:
                shapes = [("512x512", 512, 512), ("1024x512", 1024, 512), ("512x1024", 512, 1024)]
                model = [(f"l{i}.{n}", N, K) for i in range(LLAMA58M_LAYERS) for n, N, K in LLAMA58M_LAYER]
            res = benchmark(shapes, a.M or [1, 128], a.ratio, model, reps=a.reps, insn=not a.no_insn,
                            wall=not a.no_wall, labels=a.only)
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
