"""ctypes kernels vs the numpy int64 / torch integer references, bit for bit."""
import numpy as np
import pytest
import torch

from squat.export import pack_int4, unpack_int4
from squat.kernels.reference import (int_gemm_ref, mixed_linear_ref, quantize_group_ref, round_half_away,
                                     topk_mask_ref)

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
            "gemm_f16_f16_8x16_neonfp16arith"} <= names
    for k in lib.kernels.values():
        assert k.mr > 0 and k.nr > 0 and k.kr > 0  # tile sizes come from the library


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


def test_float_kernels(lib):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((9, 77)).astype(np.float32), rng.standard_normal((21, 77)).astype(np.float32)
    y32 = lib.matmul(x, lib.pack_weights(lib.default("fp32"), w))
    np.testing.assert_allclose(y32, x @ w.T, rtol=1e-5, atol=1e-4)
    y16 = lib.matmul(x.astype(np.float16), lib.pack_weights(lib.default("fp16"), w.astype(np.float16)))
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


def test_round_half_away():
    v = np.array([0.5, -0.5, 1.5, -2.5, 2.4999998, 0.49999997], np.float32)
    assert round_half_away(v).tolist() == [1, -1, 2, -3, 2, 0]


@pytest.mark.parametrize("qmax", [127, 7])
def test_quantize_group_matches_reference(lib, qmax):
    rng = np.random.default_rng(qmax)
    x = (rng.standard_normal((11, 203)) * 3).astype(np.float32)
    x[0, :8] = [0.5, -0.5, 1.5, -1.5, 2.5, 0, -0.0, 1e-30]
    q, s = lib.quantize_group(x, qmax)
    qr, sr = quantize_group_ref(x, qmax)
    assert s == float(sr) and np.array_equal(q, qr)
    # values sitting exactly on .5 of a step round away from zero
    s2 = float(np.float32(4.0) / np.float32(qmax))
    xt = np.array([[4.0, 0.5 * s2, -0.5 * s2, 1.5 * s2]], np.float32)
    qt, _ = lib.quantize_group(xt, qmax)
    assert np.array_equal(qt, quantize_group_ref(xt, qmax)[0])


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("m", [1, 7, 128])
def test_mixed_precision_token_control(lib, m, ratio):
    rng = np.random.default_rng(m)
    n, k = 40, 97
    w = rng.integers(-8, 8, (n, k)).astype(np.int8)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[m // 2] *= 50  # outlier token
    imp = rng.integers(0, 4, m).astype(np.float32)  # ties
    sw = rng.random(n).astype(np.float32) * 0.01
    yr, mr, sr = mixed_linear_ref(x, w, sw, ratio, importance=imp)
    assert mr.sum() == int(np.floor(ratio * m + 0.5)) or ratio in (0.0, 1.0)
    assert np.array_equal(mr, topk_mask_ref(imp, ratio))
    for k8, k4 in ((lib.default("w4a8"), lib.default("w4a4")),
                   (lib.get("gemm_qs8_qs4x2_mkmp_4x8_neon"), lib.get("gemm_qs4_qs4x2_mkmp_4x8_neon"))):
        y, mask, s = lib.mixed_linear(x, lib.pack_weights(k8, w), lib.pack_weights(k4, w), sw, ratio, importance=imp)
        assert np.array_equal(mask, mr) and np.array_equal(y, yr) and s == pytest.approx(sr, rel=0, abs=0)
    # precomputed mask path
    mask_in = (rng.random(m) < 0.3).astype(np.uint8)
    y, mask, _ = lib.mixed_linear(x, lib.pack_weights(lib.default("w4a8"), w), lib.pack_weights(lib.default("w4a4"), w),
                                  sw, mask8=mask_in)
    assert np.array_equal(mask, mask_in) and np.array_equal(y, mixed_linear_ref(x, w, sw, mask8=mask_in)[0])
