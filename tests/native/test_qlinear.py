"""The fused quantized linear (squat_qlinear_run, float32 in and out) against the Python student's own arithmetic
(squat.export.ActSite.quantize + int64 matmul + float32 epilogue, squat.kernels.reference.qlinear_ref), bit for bit:
in the host build through ctypes, and under qemu -cpu cortex-a76 / -cpu max through a case file."""
import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch

from squat.export import ActSite
from squat.kernels.binding import QlinearError
from squat.kernels.reference import qlinear_ref

needs_qemu = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64", "make")),
    reason="needs gcc-aarch64-linux-gnu and qemu-user (apt-get install -y gcc-aarch64-linux-gnu qemu-user)")

FEAT_NEON, FEAT_DOT, FEAT_I8MM = 1, 2, 8
FEATURES = {"neon": FEAT_NEON, "a76": FEAT_NEON | FEAT_DOT, "i8mm": FEAT_NEON | FEAT_DOT | FEAT_I8MM}


def _site(rng, bits: int, mode: str) -> ActSite:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    qmin, qmax = [(lo, hi), (-hi, hi), (lo + 1, hi - 1) if bits > 2 else (lo, hi)][rng.integers(3)]
    zp = int(rng.integers(-hi, hi + 1)) if rng.random() < 0.7 else 0
    if mode == "dynamic_per_token" and zp >= qmax:
        zp = qmax - 1
    scale = float(np.float32(rng.uniform(0.002, 0.05))) if mode == "static" else None
    return ActSite("site", mode, bits, qmin, qmax, scale, zp)


def _acts(rng, m, k, sites_per_row):
    x = (rng.standard_normal((m, k)) * 0.4).astype(np.float32)
    x[rng.random((m, k)) < 0.05] *= 40  # beyond the clip
    for i, s in enumerate(sites_per_row):
        if s.mode == "static":  # exact half-step ties: round half to even must decide them
            ties = rng.random(k) < 0.1
            x[i, ties] = ((rng.integers(-10, 10, ties.sum()) + 0.5) * np.float32(s.scale)).astype(np.float32)
    if m > 2:
        x[m // 2] = 0  # an all-zero token: the dynamic scale floors at 1e-8
    return x


def _case(rng, m, n, k, wb=None, big=False):
    wb = wb or int(rng.integers(2, 9))
    lo_bits, hi_bits = int(rng.integers(2, 9)), int(rng.integers(2, 9))
    if big:  # keep K * max|W| * max|q - zp| below 2^31 (else the call refuses; tested separately)
        lo_bits, hi_bits = min(lo_bits, 4 if wb == 8 else 8), min(hi_bits, 4 if wb == 8 else 8)
    low = _site(rng, lo_bits, "static" if rng.random() < 0.6 else "dynamic_per_token")
    high = _site(rng, hi_bits, "static" if rng.random() < 0.6 else "dynamic_per_token")
    mask = (rng.random(m) < 0.5) if rng.random() < 0.5 else None
    wl, wh = -(2 ** (wb - 1)), 2 ** (wb - 1) - 1
    if big and wb == 8:
        wl, wh = -63, 63
    w = rng.integers(wl, wh + 1, (n, k)).astype(np.int8)
    if rng.random() < 0.2:
        w[:] = wl  # extreme weights
    per_ch = rng.random() < 0.5
    sw = (rng.uniform(0.0005, 0.01, n if per_ch else 1)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if rng.random() < 0.5 else None
    rows = [high if (mask is not None and mask[i]) else low for i in range(m)]
    x = _acts(rng, m, k, rows)
    return dict(x=x, w=w, wb=wb, sw=sw, bias=bias, low=low, high=high, mask=mask)


def _shapes(rng, count):
    out = [(1, 1, 1), (1, 17, 33), (8, 9, 31), (128, 24, 96), (3, 512, 512)]
    while len(out) < count:
        out.append(tuple(int(v) | 1 for v in (rng.integers(1, 20), rng.integers(1, 40), rng.integers(1, 300))))
    return out


def _ref(c):
    return qlinear_ref(c["x"], c["w"], c["sw"], c["bias"], c["low"], c["high"], c["mask"])


def _same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _kernels_for(lib, wb):
    """Every available integer kernel whose layout can hold weights of this width."""
    return [k for k in lib.kernels.values() if k.kind == "int" and k.available and k.weight_bits >= (4 if wb <= 4 else 8)]


def test_qlinear_matches_the_python_student_bit_for_bit(lib):
    rng = np.random.default_rng(14)
    checked = 0
    for m, n, k in _shapes(rng, 60):
        c = _case(rng, m, n, k)
        yr, sr = _ref(c)
        bits = max(c["low"].bits, c["high"].bits if c["mask"] is not None else 0)
        for feats in FEATURES.values():  # automatic kernel choice for each CPU generation's layout
            p = lib.qlinear_pack(c["w"], c["wb"], c["sw"], c["bias"], features=feats)
            y, s = lib.qlinear(c["x"], p, c["low"], c["high"], c["mask"], return_scales=True)
            assert _same_bits(y, yr), (m, n, k, feats, lib.qlinear_kernel(p, m, bits).name)
            assert np.array_equal(s, sr)
            checked += 1
        for ki in _kernels_for(lib, c["wb"]):  # and every kernel through the same path
            if ki.act_bits < bits:
                continue
            p = lib.qlinear_pack(c["w"], c["wb"], c["sw"], c["bias"], kernel=ki)
            assert _same_bits(lib.qlinear(c["x"], p, c["low"], c["high"], c["mask"], kernel=ki), yr), (ki.name, m, n, k)
            checked += 1
    assert checked > 300


@pytest.mark.parametrize("m", [1, 8])
def test_qlinear_at_k_2_pow_17(lib, m):
    rng = np.random.default_rng(m)
    for wb in (3, 4, 8):
        c = _case(rng, m, 9, 131072 + 33, wb=wb, big=True)
        yr, _ = _ref(c)
        for feats in FEATURES.values():
            p = lib.qlinear_pack(c["w"], c["wb"], c["sw"], c["bias"], features=feats)
            assert _same_bits(lib.qlinear(c["x"], p, c["low"], c["high"], c["mask"]), yr), (wb, feats)


def test_qlinear_refuses_with_a_message_naming_the_fix(lib):
    w = np.full((4, 140000), 127, np.int8)
    p = lib.qlinear_pack(w, 8, np.float32(0.01))
    site8 = ActSite("s", "static", 8, -128, 127, 0.1, 0)
    with pytest.raises(QlinearError, match="split the linear along K"):
        lib.qlinear(np.ones((1, 140000), np.float32), p, site8)
    small = lib.qlinear_pack(np.zeros((2, 3), np.int8), 4, np.float32(1))
    with pytest.raises(QlinearError, match="2 to 8 bits"):
        lib.qlinear(np.ones((1, 3), np.float32), small, ActSite("s", "static", 9, -256, 255, 0.1, 0))
    with pytest.raises(QlinearError, match="qmin <= qmax"):
        lib.qlinear(np.ones((1, 3), np.float32), small, ActSite("s", "static", 4, -9, 7, 0.1, 0))
    with pytest.raises(QlinearError, match="2 to 8 bits"):
        lib.qlinear_pack(np.zeros((2, 3), np.int8), 1, np.float32(1))
    with pytest.raises(QlinearError, match="signed range"):
        lib.qlinear_pack(np.full((2, 3), 8, np.int8), 4, np.float32(1))
    with pytest.raises(ValueError, match="needs the high site"):
        lib.qlinear(np.ones((1, 3), np.float32), small, site8, high_mask=np.ones(1, bool))


def test_qlinear_on_an_exported_student(lib, tmp_path):
    """The trained model's own sites and weights: the kernel path equals the Python student's arithmetic."""
    from squat.config import ModelConfig
    from squat.export import ExportedModel, IntegerLinear, export_model
    from squat.models import build_model
    from squat.quant.config import QuantConfig
    from squat.quant.prepare import calibrate, quantize_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=48), 96, 0,
                        attn_implementation="eager")
    quantize_model(model, QuantConfig(name="w4a8", weight_bits=4, act_bits=8, probs_bits=8))
    calibrate(model, torch.randint(0, 96, (2, 24)))
    export_model(model.eval(), tmp_path)
    x = np.random.default_rng(5).standard_normal((7, 32)).astype(np.float32)
    for name, lin in ExportedModel(tmp_path).linears.items():
        if lin.act.is_float or lin.in_features != 32:
            continue
        p = lib.qlinear_pack(lin.w.numpy(), lin.weight_bits, lin.w_scale.numpy(),
                             None if lin.bias is None else lin.bias.numpy())
        y = lib.qlinear(x, p, lin.act)
        yr, _ = qlinear_ref(x, lin.w.numpy(), lin.w_scale.numpy(), None if lin.bias is None else lin.bias.numpy(),
                            lin.act)
        assert _same_bits(y, yr), name
        # and the float64 integer reference of the export agrees to float32 rounding
        np.testing.assert_allclose(y, IntegerLinear(lin)(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-7)


def test_kernel_choice_is_exposed_and_depends_on_m(lib):
    w = np.random.default_rng(0).integers(-8, 8, (64, 64)).astype(np.int8)
    for feats in FEATURES.values():
        p = lib.qlinear_pack(w, 4, np.float32(0.1), features=feats)
        k1, k128 = lib.qlinear_kernel(p, 1, 8), lib.qlinear_kernel(p, 128, 8)
        assert k1.weight_bits == k128.weight_bits == 4
        if k1.mr == 1:
            assert k128.mr > 1


# ---------------------------------------------------------------------------------------------- qemu
def _write_cases(path, cases):
    site = lambda s: struct.pack("<5if", {"static": 0, "dynamic_per_token": 1}[s.mode], s.bits, s.qmin, s.qmax,  # noqa: E731
                                 int(s.zero_point), float(s.scale or 0.0))
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(cases)))
        for c in cases:
            m, k = c["x"].shape
            n = c["w"].shape[0]
            per_ch = int(c["sw"].size == n and n != 1)
            f.write(struct.pack("<8i", m, n, k, c["wb"], per_ch, c["bias"] is not None, c["mask"] is not None,
                                c.get("features", 0)))
            f.write(c.get("kernel", "").encode().ljust(48, b"\0"))
            f.write(site(c["low"]) + site(c["high"]))
            f.write(c["x"].tobytes() + c["w"].tobytes() + np.asarray(c["sw"], np.float32).reshape(-1)[: n if per_ch else 1].tobytes())
            if c["bias"] is not None:
                f.write(c["bias"].tobytes())
            if c["mask"] is not None:
                f.write(np.asarray(c["mask"], np.uint8).tobytes())


def _read_results(path, cases):
    out, data, off = [], open(path, "rb").read(), 0
    for c in cases:
        m, n = c["x"].shape[0], c["w"].shape[0]
        rc = struct.unpack_from("<i", data, off)[0]
        name = data[off + 4: off + 52].split(b"\0")[0].decode()
        y = np.frombuffer(data, np.float32, m * n, off + 52).reshape(m, n)
        off += 52 + 4 * m * n
        out.append((rc, name, y))
    return out


@needs_qemu
@pytest.mark.parametrize("cpu", ["cortex-a76", "max"])
def test_qlinear_under_qemu_matches_the_python_student(tmp_path, cpu):
    from squat.kernels.build import build

    rng = np.random.default_rng(11)
    cases = []
    for m, n, k in _shapes(rng, 40) + [(1, 9, 131072 + 33), (8, 9, 131072 + 33)]:
        c = _case(rng, m, n, k, big=k > 100000)
        for feats in (0, FEATURES["a76"], FEATURES["neon"], FEATURES["i8mm"]):
            cases.append({**c, "features": feats})
    _write_cases(tmp_path / "cases.bin", cases)
    exe = build("aarch64-cross") / "squat_test"
    subprocess.run(["qemu-aarch64", "-cpu", cpu, str(exe), "--qlinear-cases", str(tmp_path / "cases.bin"),
                    str(tmp_path / "out.bin")], check=True, timeout=600)
    used = set()
    for c, (rc, name, y) in zip(cases, _read_results(tmp_path / "out.bin", cases)):
        if c["features"] == FEATURES["i8mm"] and cpu == "cortex-a76":  # packed for i8mm, run on a core without it
            assert rc == -6, (rc, name)  # SQUAT_QL_E_CPU: refused, never silently wrong
            continue
        assert rc == 0, (rc, name)
        assert _same_bits(y, _ref(c)[0]), (name, c["x"].shape, c["w"].shape)
        used.add(name)
    assert any("neondot" in u for u in used) and any("_neon" in u and "neondot" not in u for u in used)
    assert (cpu == "max") == any("i8mm" in u for u in used)
