"""ctypes binding of ``libsquat_kernels.so``: numpy arrays in, numpy arrays out.

Kernels are addressed by name; tile sizes and packed sizes come from the library (never hardcoded here).
"""
from __future__ import annotations

import ctypes as C
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squat.kernels.build import build

_sz, _vp, _i8p = C.c_size_t, C.c_void_p, C.c_void_p


class _IgemmHead(C.Structure):  # leading fields of squat_igemm_ukernel
    _fields_ = [("name", C.c_char_p), ("precision", C.c_char_p), ("weight_bits", C.c_int), ("act_bits", C.c_int),
                ("features", C.c_uint)]


class _FgemmHead(C.Structure):  # leading fields of squat_fgemm_ukernel
    _fields_ = [("name", C.c_char_p), ("precision", C.c_char_p), ("elem_size", C.c_size_t), ("features", C.c_uint)]


@dataclass(frozen=True)
class KernelInfo:
    index: int
    name: str
    precision: str
    kind: str  # "int" or "float"
    weight_bits: int
    act_bits: int
    mr: int
    nr: int
    kr: int
    available: bool


class _ActSite(C.Structure):  # squat_act_site
    _fields_ = [("mode", C.c_int), ("bits", C.c_int), ("qmin", C.c_int), ("qmax", C.c_int), ("zero_point", C.c_int),
                ("scale", C.c_float)]


class _QlinearAct(C.Structure):  # squat_qlinear_act
    _fields_ = [("low", _ActSite), ("high", _ActSite), ("high_mask", C.c_void_p)]


_MODES = {"static": 0, "dynamic_per_token": 1}


def act_site_struct(site) -> _ActSite:
    """An activation site (``squat.export.ActSite`` or anything with its fields) as the C struct."""
    if site.mode not in _MODES:
        raise ValueError(f"site {getattr(site, 'name', '?')} is {site.mode!r}: only static and dynamic_per_token "
                         "sites run on the integer kernels")
    scale = float(site.scale) if site.mode == "static" else 0.0
    return _ActSite(_MODES[site.mode], int(site.bits), int(site.qmin), int(site.qmax), int(site.zero_point or 0),
                    scale)


class QlinearError(ValueError):
    """A squat_qlinear call refused its input; the message is the library's one-line fix."""


@dataclass
class QLinearWeights:
    """A packed-weight blob for squat_qlinear_run (weights, rowsums, scales, bias, kernel layout)."""
    n: int
    k: int
    weight_bits: int
    data: np.ndarray


@dataclass
class PackedWeights:
    kernel: KernelInfo
    n: int
    k: int
    data: np.ndarray  # opaque packed bytes (kernel layout)


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data_as(C.c_void_p)


class KernelLib:
    def __init__(self, lib_path: str | Path):
        self.path = Path(lib_path)
        L = self.lib = C.CDLL(str(self.path))
        sig = {
            "squat_build_target": (C.c_char_p, []), "squat_cpu_features": (C.c_uint, []),
            "squat_igemm_count": (_sz, []), "squat_igemm_get": (C.POINTER(_IgemmHead), [_sz]),
            "squat_igemm_available": (C.c_int, [_sz]), "squat_igemm_default": (C.c_int, [C.c_char_p]),
            "squat_igemm_default_m": (C.c_int, [C.c_char_p, _sz]),
            "squat_igemm_mr": (_sz, [_sz]), "squat_igemm_nr": (_sz, [_sz]), "squat_igemm_kr": (_sz, [_sz]),
            "squat_igemm_rhs_size": (_sz, [_sz, _sz, _sz]), "squat_igemm_lhs_size": (_sz, [_sz, _sz, _sz]),
            "squat_igemm_scratch_size": (_sz, [_sz, _sz, _sz, _sz]),
            "squat_igemm_pack_rhs": (None, [_sz, _sz, _sz, _vp, _sz, _vp]),
            "squat_igemm_pack_lhs": (None, [_sz, _sz, _sz, _vp, _sz, _vp]),
            "squat_igemm_run": (C.c_int, [_sz, _sz, _sz, _sz, _vp, _vp, _vp, _sz, _vp]),
            "squat_igemm_max_k": (_sz, [_sz]),
            "squat_igemm_workspace_size": (_sz, [_sz, _sz, _sz, _sz]),
            "squat_igemm_matmul": (C.c_int, [_sz, _sz, _sz, _sz, _vp, _sz, _vp, _vp, _sz, _vp]),
            "squat_qlinear_strerror": (C.c_char_p, [C.c_int]),
            "squat_qlinear_packed_size": (_sz, [_sz, _sz, C.c_int, C.c_uint]),
            "squat_qlinear_pack": (C.c_int, [_sz, _sz, C.c_int, _vp, _sz, _vp, C.c_int, _vp, C.c_uint, _vp]),
            "squat_qlinear_packed_size_for": (_sz, [C.c_int, _sz, _sz]),
            "squat_qlinear_pack_for": (C.c_int, [C.c_int, _sz, _sz, C.c_int, _vp, _sz, _vp, C.c_int, _vp, _vp]),
            "squat_qlinear_kernel": (C.c_int, [_vp, _sz, C.c_int]),
            "squat_qlinear_workspace_size": (_sz, [_vp, _sz]),
            "squat_qlinear_run_kernel": (C.c_int, [C.c_int, _vp, _sz, _vp, _sz, C.POINTER(_QlinearAct), _vp, _sz,
                                                   _vp, _sz, _vp]),
            "squat_fgemm_count": (_sz, []), "squat_fgemm_get": (C.POINTER(_FgemmHead), [_sz]),
            "squat_fgemm_available": (C.c_int, [_sz]),
            "squat_fgemm_mr": (_sz, [_sz]), "squat_fgemm_nr": (_sz, [_sz]), "squat_fgemm_kr": (_sz, [_sz]),
            "squat_fgemm_rhs_size": (_sz, [_sz, _sz, _sz]), "squat_fgemm_lhs_size": (_sz, [_sz, _sz, _sz]),
            "squat_fgemm_pack_rhs": (None, [_sz, _sz, _sz, _vp, _sz, _vp]),
            "squat_fgemm_pack_lhs": (None, [_sz, _sz, _sz, _vp, _sz, _vp]),
            "squat_fgemm_run": (None, [_sz, _sz, _sz, _sz, _vp, _vp, _vp, _sz]),
        }
        for name, (res, args) in sig.items():
            f = getattr(L, name)
            f.restype, f.argtypes = res, args
        self.target = L.squat_build_target().decode()
        self.kernels: dict[str, KernelInfo] = {}
        for i in range(L.squat_igemm_count()):
            h = L.squat_igemm_get(i).contents
            self.kernels[h.name.decode()] = KernelInfo(
                i, h.name.decode(), h.precision.decode(), "int", h.weight_bits, h.act_bits,
                L.squat_igemm_mr(i), L.squat_igemm_nr(i), L.squat_igemm_kr(i), bool(L.squat_igemm_available(i)))
        for i in range(L.squat_fgemm_count()):
            h = L.squat_fgemm_get(i).contents
            self.kernels[h.name.decode()] = KernelInfo(
                i, h.name.decode(), h.precision.decode(), "float", 32 if h.elem_size == 4 else 16,
                32 if h.elem_size == 4 else 16, L.squat_fgemm_mr(i), L.squat_fgemm_nr(i), L.squat_fgemm_kr(i),
                bool(L.squat_fgemm_available(i)))

    # ---- selection -------------------------------------------------------------------------------------
    def default(self, precision: str, m: int | None = None) -> KernelInfo:
        """Fastest available kernel: 'w8a8', 'w4a8', 'w4a4' (integer) or 'fp32', 'fp16'; with ``m = 1`` the decode
        kernel (a GEMV reading the same packed weights) where there is one."""
        if precision in ("fp32", "fp16"):
            cands = [k for k in self.kernels.values() if k.kind == "float" and k.precision == precision and k.available]
            return next((k for k in cands if (k.mr == 1) == (m == 1)), cands[0])
        i = self.lib.squat_igemm_default_m(precision.encode(), m or 0)
        if i < 0:
            raise RuntimeError(f"no available kernel for {precision}")
        return next(k for k in self.kernels.values() if k.kind == "int" and k.index == i)

    def get(self, name: str | KernelInfo) -> KernelInfo:
        return name if isinstance(name, KernelInfo) else self.kernels[name]

    # ---- integer kernels -------------------------------------------------------------------------------
    def pack_weights(self, kernel: str | KernelInfo, w: np.ndarray) -> PackedWeights:
        """w: int8 [N, K] (unpacked; 4-bit kernels take values in [-8, 7]) -> kernel layout."""
        ki = self.get(kernel)
        if ki.kind == "int":
            w = np.ascontiguousarray(w, dtype=np.int8)
            lim = 8 if ki.weight_bits == 4 else 128
            if w.size and (w.min() < -lim or w.max() > lim - 1):
                raise ValueError(f"{ki.name}: weights must lie in [{-lim}, {lim - 1}]")
            n, k = w.shape
            buf = np.zeros(max(1, self.lib.squat_igemm_rhs_size(ki.index, n, k)), np.uint8)
            self.lib.squat_igemm_pack_rhs(ki.index, n, k, _ptr(w), k, _ptr(buf))
        else:
            w = np.ascontiguousarray(w, dtype=np.float32 if ki.precision == "fp32" else np.float16)
            n, k = w.shape
            buf = np.zeros(max(1, self.lib.squat_fgemm_rhs_size(ki.index, n, k)), np.uint8)
            self.lib.squat_fgemm_pack_rhs(ki.index, n, k, _ptr(w), k, _ptr(buf))
        return PackedWeights(ki, n, k, buf)

    def matmul(self, x: np.ndarray, packed: PackedWeights) -> np.ndarray:
        """Integer kernels: int8 [M, K] -> int32 [M, N]. Float kernels: fp32/fp16 [M, K] -> same dtype [M, N]."""
        ki = packed.kernel
        if not ki.available:
            raise RuntimeError(f"kernel {ki.name} needs CPU features this machine lacks")
        if ki.kind == "int":
            x = np.ascontiguousarray(x, dtype=np.int8)
            m, k = x.shape
            assert k == packed.k, (k, packed.k)
            lim = 8 if ki.act_bits == 4 else 128
            if x.size and (x.min() < -lim or x.max() > lim - 1):
                raise ValueError(f"{ki.name}: activations must lie in [{-lim}, {lim - 1}]")
            c = np.empty((m, packed.n), np.int32)
            ws = np.empty(self.lib.squat_igemm_workspace_size(ki.index, m, packed.n, k), np.uint8)
            if self.lib.squat_igemm_matmul(ki.index, m, packed.n, k, _ptr(x), k, _ptr(packed.data), _ptr(c), packed.n,
                                           _ptr(ws)):
                raise ValueError(f"{ki.name} computes K <= {self.lib.squat_igemm_max_k(ki.index)} exactly, got K = {k}: "
                                 "use gemm_qs8_qs4_1x8c4_neondot (no K limit) or squat_qlinear_run, which picks it")
            return c
        dt = np.float32 if ki.precision == "fp32" else np.float16
        x = np.ascontiguousarray(x, dtype=dt)
        m, k = x.shape
        lhs = np.zeros(max(1, self.lib.squat_fgemm_lhs_size(ki.index, m, k)), np.uint8)
        c = np.empty((m, packed.n), dt)
        self.lib.squat_fgemm_pack_lhs(ki.index, m, k, _ptr(x), k, _ptr(lhs))
        self.lib.squat_fgemm_run(ki.index, m, packed.n, k, _ptr(lhs), _ptr(packed.data), _ptr(c), packed.n)
        return c

    def make_runner(self, packed: PackedWeights, m: int):
        """Preallocated pack_lhs + run closure (benchmarks: no allocation inside the timed call)."""
        ki, n, k, L = packed.kernel, packed.n, packed.k, self.lib
        if ki.kind == "int":
            lhs = np.zeros(max(1, L.squat_igemm_lhs_size(ki.index, m, k)), np.uint8)
            scr = np.zeros(max(1, L.squat_igemm_scratch_size(ki.index, m, n, k)), np.uint8)
            c = np.empty((m, n), np.int32)
            pl, pc, ps, pw = _ptr(lhs), _ptr(c), _ptr(scr), _ptr(packed.data)
            pack, run, idx = L.squat_igemm_pack_lhs, L.squat_igemm_run, ki.index

            def call(x: np.ndarray):
                pack(idx, m, k, x.ctypes.data, k, pl)
                run(idx, m, n, k, pl, pw, pc, n, ps)
                return c
        else:
            dt = np.float32 if ki.precision == "fp32" else np.float16
            lhs = np.zeros(max(1, L.squat_fgemm_lhs_size(ki.index, m, k)), np.uint8)
            c = np.empty((m, n), dt)
            pl, pw, pc = _ptr(lhs), _ptr(packed.data), _ptr(c)
            pack, run, idx = L.squat_fgemm_pack_lhs, L.squat_fgemm_run, ki.index

            def call(x: np.ndarray):
                pack(idx, m, k, x.ctypes.data, k, pl)
                run(idx, m, n, k, pl, pw, pc, n)
                return c
        return call

    # ---- fused quantized linear (squat_qlinear.h) ------------------------------------------------------
    def _ql_check(self, rc: int, what: str) -> None:
        if rc:
            raise QlinearError(f"{what}: {self.lib.squat_qlinear_strerror(rc).decode()}")

    def qlinear_pack(self, w: np.ndarray, weight_bits: int, w_scale, bias=None, features: int = 0,
                     kernel: str | KernelInfo | None = None) -> QLinearWeights:
        """int8 [N, K] weights of ``weight_bits`` (2..8), float32 scales ([N] per channel or one) and optional
        bias -> a blob in this CPU's layout (or ``features``' layout, or ``kernel``'s)."""
        w = np.ascontiguousarray(w, dtype=np.int8)
        n, k = w.shape
        sw = np.ascontiguousarray(np.asarray(w_scale, dtype=np.float32).reshape(-1))
        per_ch = int(sw.size == n and n != 1)
        b = None if bias is None else np.ascontiguousarray(np.asarray(bias, dtype=np.float32).reshape(n))
        L = self.lib
        if kernel is None:
            size = L.squat_qlinear_packed_size(n, k, int(weight_bits), int(features))
            if size == 0:
                raise QlinearError(f"qlinear_pack: {L.squat_qlinear_strerror(-2).decode()} (got {weight_bits} bits)")
            buf = np.zeros(size, np.uint8)
            rc = L.squat_qlinear_pack(n, k, int(weight_bits), _ptr(w), k, _ptr(sw), per_ch, _ptr(b), int(features),
                                      _ptr(buf))
        else:
            ki = self.get(kernel)
            buf = np.zeros(max(1, L.squat_qlinear_packed_size_for(ki.index, n, k)), np.uint8)
            rc = L.squat_qlinear_pack_for(ki.index, n, k, int(weight_bits), _ptr(w), k, _ptr(sw), per_ch, _ptr(b),
                                          _ptr(buf))
        self._ql_check(rc, "qlinear_pack")
        return QLinearWeights(n, k, int(weight_bits), buf)

    def qlinear_kernel(self, packed: QLinearWeights, m: int, act_bits: int) -> KernelInfo:
        """The kernel squat_qlinear_run picks for M rows of ``act_bits``-bit activations."""
        i = self.lib.squat_qlinear_kernel(_ptr(packed.data), m, int(act_bits))
        self._ql_check(min(i, 0), "qlinear_kernel")
        return next(k for k in self.kernels.values() if k.kind == "int" and k.index == i)

    def _qlinear_act(self, m: int, site, high=None, high_mask=None):
        act = _QlinearAct()
        act.low = act_site_struct(site)
        mask = None
        if high_mask is not None:
            if high is None:
                raise ValueError("qlinear: high_mask needs the high site")
            act.high = act_site_struct(high)
            mask = np.ascontiguousarray(np.asarray(high_mask).reshape(m) != 0, dtype=np.uint8)
            act.high_mask = mask.ctypes.data
        return act, mask, max(act.low.bits, act.high.bits if mask is not None else 0)

    def qlinear_runner(self, packed: QLinearWeights, m: int, site, high=None, high_mask=None,
                       kernel: str | KernelInfo | None = None):
        """Preallocated squat_qlinear_run closure x -> y for M rows (benchmarks: no allocation per call); its
        ``.kernel`` names the kernel that runs."""
        L = self.lib
        act, mask, bits = self._qlinear_act(m, site, high, high_mask)
        if kernel is None:
            ki = L.squat_qlinear_kernel(_ptr(packed.data), m, max(2, min(8, bits)))
            self._ql_check(min(ki, 0), "qlinear")
        else:
            ki = self.get(kernel).index
        ws = np.empty(max(1, L.squat_qlinear_workspace_size(_ptr(packed.data), m)), np.uint8)
        y = np.empty((m, packed.n), np.float32)
        scales = np.empty(max(1, m), np.float32)
        pb, pw, py, ps, k, n, run = _ptr(packed.data), _ptr(ws), _ptr(y), _ptr(scales), packed.k, packed.n, L.squat_qlinear_run_kernel
        pact = C.byref(act)

        def call(x: np.ndarray, _keep=(act, mask, ws, scales)):
            rc = run(ki, pb, m, x.ctypes.data, k, pact, py, n, pw, ws.size, ps)
            if rc:
                self._ql_check(rc, "qlinear")
            return y

        call.kernel = next(kk for kk in self.kernels.values() if kk.kind == "int" and kk.index == ki)
        call.row_scales = scales
        return call

    def qlinear(self, x: np.ndarray, packed: QLinearWeights, site, high=None, high_mask: np.ndarray | None = None,
                kernel: str | KernelInfo | None = None, return_scales: bool = False):
        """float32 [M, K] -> float32 [M, N] through squat_qlinear_run: ``site`` (and for token-adaptive inputs
        ``high`` with a bool ``high_mask`` [M]) quantize the rows exactly as ``squat.export.ActSite.quantize``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        m, k = x.shape
        if k != packed.k:
            raise ValueError(f"qlinear: x has {k} columns, the weights {packed.k}")
        run = self.qlinear_runner(packed, m, site, high, high_mask, kernel)
        y = run(x).copy()
        return (y, run.row_scales[:m].copy()) if return_scales else y


_LIBS: dict[str, KernelLib] = {}


def load(preset: str | None = None) -> KernelLib:
    """Build (cached) and load the shared library for the host preset (x86-simde or aarch64-native)."""
    out = build(preset)
    key = str(out)
    if key not in _LIBS:
        _LIBS[key] = KernelLib(out / "libsquat_kernels.so")
    return _LIBS[key]
