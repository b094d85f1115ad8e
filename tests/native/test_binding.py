"""ctypes kernels vs the numpy int64 / torch integer references, bit for bit."""
import numpy as np
import pytest
import torch

from squat.export import pack_int4, unpack_int4
from squat.kernels.reference import int_gemm_ref

SHAPES = [(1, 1, 1), (1, 512, 512), (3, 17, 33), (7, 31, 4095), (13, 9, 129), (33, 65, 257), (128, 24, 96)]


def _vals(rng, shape, bits, mode):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if mode == "min":
        return np.full(shape, lo, np.int8)
    if mode == "max":
        return np.full(shape, hi, np.int8)
    return rng.integers(lo, hi + 1, shape).astype(np.int8)


def test_kernel_table(lib):
    names = {k.name for k in lib.kernels.values()}
    assert {"gemm_qs8_qs8_8x8c4_neondot", "gemm_qs8_qs4x2_mkmp_4x8_neon", "gemm_qs4_qs4x2_mkmp_4x8_neon",
            "gemm_f16_f16_8x16_neonfp16arith", "gemm_f16_f16_1x16_neonfp16arith", "gemm_qs8_qs8_1x8c4_neondot",
            "gemm_qs8_qs8_1x8c8_neondot", "gemm_qs8_qs4_1x8c4_neondot", "gemm_qs4_qs4_1x8c4_neondot"} <= names
    for k in lib.kernels.values():
        assert k.mr > 0 and k.nr > 0 and k.kr > 0  # tile sizes come from the library


def test_default_kernel_depends_on_m(lib):
    """At M = 1 the default is the decode GEMV reading the same packed weights (smmla at M = 1 wastes half its
    multiplies on a zero row); otherwise the prefill tile."""
    for prec in ("w8a8", "w4a8", "w4a4", "fp16", "fp32"):
        assert lib.default(prec, 1).mr == 1 and lib.default(prec, 128).mr > 1, prec
    assert lib.default("w4a4", 1).name == "gemm_qs4_qs4_1x8c4_neondot"
    assert lib.default("w4a8", 1).name == "gemm_qs8_qs4_1x8c4_neondot"


@pytest.mark.parametrize("mode", ["rand", "min", "max"])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_int_kernels_exact(lib, m, n, k, mode):
    rng = np.random.default_rng(m * 1000 + n + k)
    for ki in lib.kernels.values():
        if ki.kind != "int" or not ki.available:
            continue
        for ab in (8, 4):
            if ki.act_bits < ab:
                continue
            x = _vals(rng, (m, k), ab, mode)
            w = _vals(rng, (n, k), ki.weight_bits, "rand" if mode == "rand" else ("max" if mode == "min" else "min"))
            got = lib.matmul(x, lib.pack_weights(ki, w))
            ref = int_gemm_ref(x, w)
            tref = (torch.from_numpy(x).long() @ torch.from_numpy(w).long().T).int().numpy()
            assert np.array_equal(got, ref), (ki.name, ab)
            assert np.array_equal(got, tref), (ki.name, ab)


@pytest.mark.parametrize("m", [1, 9])
def test_float_kernels(lib, m):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((m, 77)).astype(np.float32), rng.standard_normal((41, 77)).astype(np.float32)
    y32 = lib.matmul(x, lib.pack_weights(lib.default("fp32", m), w))
    np.testing.assert_allclose(y32, x @ w.T, rtol=1e-5, atol=1e-4)
    y16 = lib.matmul(x.astype(np.float16), lib.pack_weights(lib.default("fp16", m), w.astype(np.float16)))
    np.testing.assert_allclose(y16.astype(np.float32), x @ w.T, rtol=0.05, atol=0.25)


def test_export_int4_roundtrip_into_kernel(lib):
    rng = np.random.default_rng(2)
    w = rng.integers(-8, 8, (19, 45)).astype(np.int8)
    packed = pack_int4(torch.from_numpy(w))
    back = unpack_int4(packed, 45).numpy()
    assert np.array_equal(back, w)
    x = rng.integers(-128, 128, (5, 45)).astype(np.int8)
    assert np.array_equal(lib.matmul(x, lib.pack_weights(lib.default("w4a8"), back)), int_gemm_ref(x, w))


def test_pack_rejects_out_of_range(lib):
    with pytest.raises(ValueError):
        lib.pack_weights(lib.default("w4a8"), np.full((2, 2), 8, np.int8))
    with pytest.raises(ValueError):
        lib.matmul(np.full((1, 2), 9, np.int8), lib.pack_weights("gemm_qs4_qs4x2_mkmp_4x8_neon", np.zeros((2, 2), np.int8)))


@pytest.mark.parametrize("m", [1, 8])
def test_every_kernel_at_k_2_pow_17(lib, m):
    """K >= 2^17, where the old x16 trick of the 4-bit decode path overflowed (M=1, N=8, K=131072, x=-128, w=-8
    gave -134217728 instead of 134217728): every integer kernel, extreme and mixed values, against int64."""
    k = 131072
    rng = np.random.default_rng(m)
    for ki in lib.kernels.values():
        if ki.kind != "int" or not ki.available:
            continue
        xa, wa = (128 if ki.act_bits == 8 else 8), (128 if ki.weight_bits == 8 else 8)
        for x, w in ((np.full((m, k), -xa, np.int8), np.full((8, k), -wa, np.int8)),
                     (rng.choice([-xa, xa - 1], (m, k)).astype(np.int8), rng.choice([-wa, wa - 1], (9, k)).astype(np.int8))):
            assert np.array_equal(lib.matmul(x, lib.pack_weights(ki, w)), int_gemm_ref(x, w)), ki.name
    x, w = np.full((1, k), -128, np.int8), np.full((8, k), -8, np.int8)
    assert (lib.matmul(x, lib.pack_weights(lib.default("w4a8", 1), w)) == 134217728).all()


def test_k_limit_is_refused_with_the_limit_named(lib):
    """The W4A4 decode kernel is exact for K <= 2^20 (|16 C| < 2^31); a larger K is refused, never wrapped."""
    ki = lib.get("gemm_qs4_qs4_1x8c4_neondot")
    k = (1 << 20) + 32
    w = np.zeros((8, k), np.int8)
    with pytest.raises(ValueError, match=r"K <= 1048576"):
        lib.matmul(np.zeros((1, k), np.int8), lib.pack_weights(ki, w))
