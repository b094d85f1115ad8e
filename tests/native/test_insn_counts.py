"""Deterministic executed-instruction counts under qemu (TCG plugin) and the kernels' disassembly. Ratios only,
never timings. The baseline is the spill-free FP16 kernel for M (8x16 tile at prefill, the GEMV at decode), fp16
in and out; every integer row is a fused squat_qlinear_run call, fp32 in and out, quantization and
dequantization included."""
import shutil

import pytest

needs_qemu = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64", "make", "aarch64-linux-gnu-objdump")),
    reason="needs gcc-aarch64-linux-gnu and qemu-user (apt-get install -y gcc-aarch64-linux-gnu qemu-user)")

LLAMA_SHAPES = [("512x512", 512, 512), ("1024x512", 1024, 512), ("512x1024", 512, 1024)]


def _per_token(cpu: str, m: int, labels: list[str]):
    from squat.kernels.bench import LLAMA58M_LAYER, count_instructions, per_token_insn

    model = [(n, N, K) for n, N, K in LLAMA58M_LAYER]  # one layer: the ratios are the model's
    res = count_instructions(LLAMA_SHAPES, [m], 0.5, cpus=(cpu,), labels=labels)
    shapes = {(n, k): name for name, n, k in LLAMA_SHAPES}
    table = {str(m): {name: res["count"][cpu][str(m)][shapes[(N, K)]] for name, N, K in model}}
    return per_token_insn(table, model, 0.5)[str(m)], res["kernel"][cpu][str(m)]


@needs_qemu
def test_inner_loops_are_spill_free_and_the_baseline_is_not_weakened():
    from squat.kernels.disasm import kernel_stats

    stats = {s.kernel: s for s in kernel_stats()}
    for s in stats.values():
        assert s.loop is not None and s.loop.spills == 0 and s.function_spills == 0, s
    per1024 = {k: s.loop.insn_per_1024_macs for k, s in stats.items()}
    # 128 fmla .8h per 1024 MACs + 6 loads + 2 loop instructions: a weaker FP16 would inflate every ratio
    assert per1024["gemm_f16_f16_8x16_neonfp16arith"] <= 136
    assert per1024["gemm_f16_f16_1x16_neonfp16arith"] <= 162
    assert per1024["gemm_qs8_qs8_8x8c4_neondot"] <= 70 and per1024["gemm_qs8_qs8_8x8c8_neoni8mm"] <= 38
    assert per1024["gemm_qs4_qs4_1x8c4_neondot"] < per1024["gemm_qs8_qs4_1x8c4_neondot"]  # one unpack per 32 w


@needs_qemu
def test_prefill_ratios_over_the_honest_fp16_with_quantization_counted():
    a76, k76 = _per_token("cortex-a76", 128, ["FP16", "W8A8", "W4A8", "W4A4", "W4A4-MKMP"])
    assert k76["FP16"] == "gemm_f16_f16_8x16_neonfp16arith" and "neondot" in k76["W8A8"]
    for lab in ("W8A8", "W4A8", "W4A4"):  # issue 14's target: >= 1.8x (sdot's ceiling is 2x)
        assert a76["FP16"] / a76[lab] >= 1.8, (lab, a76["FP16"] / a76[lab])
    assert a76["FP16"] / a76["W4A4-MKMP"] < 1.0  # MKMP (8 MACs per instruction at best) loses to the fp16 tile
    mx, kmx = _per_token("max", 128, ["FP16", "W8A8", "W4A8", "mixed", "W4A4"])
    assert "i8mm" in kmx["W8A8"] and "i8mm" in kmx["W4A4"]
    for lab in ("W8A8", "W4A8", "mixed", "W4A4"):  # target >= 2.5x (the paper's phone: 1.41 / 1.77 / 2.04 / 2.24x)
        assert mx["FP16"] / mx[lab] >= 2.5, (lab, mx["FP16"] / mx[lab])


@needs_qemu
def test_decode_ratios_and_the_kernel_choice_by_m():
    d, kern = _per_token("max", 1, ["FP16", "W8A8", "W4A8", "W4A4"])
    # M = 1 runs the GEMVs, never smmla (which would spend half its multiplies on a zero row)
    assert kern == {"FP16": "gemm_f16_f16_1x16_neonfp16arith", "W8A8": "gemm_qs8_qs8_1x8c8_neondot",
                    "W4A8": "gemm_qs8_qs4_1x8c4_neondot", "W4A4": "gemm_qs4_qs4_1x8c4_neondot"}
    assert d["FP16"] / d["W8A8"] >= 1.7
    # Target 1.6x is missed (docs/kernels.md, "Decode"): sdot + one unpack per 32 weights bounds W4A4 at 1.53x of
    # the fp16 GEMV's inner loop; this pins what was reached so it cannot regress.
    assert d["FP16"] / d["W4A4"] >= 1.38 and d["FP16"] / d["W4A8"] >= 1.1


@needs_qemu
def test_instruction_count_deterministic():
    from squat.kernels.bench import count_instructions

    s = [("64x96", 64, 96)]
    a = count_instructions(s, [3], 0.5, cpus=("cortex-a76",), labels=["W8A8"])
    b = count_instructions(s, [3], 0.5, cpus=("cortex-a76",), labels=["W8A8"])
    assert a == b
