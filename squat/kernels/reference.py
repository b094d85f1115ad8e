"""Numpy/torch references mirroring ``native_kernels/ref`` exactly (the Python-side oracle)."""
from __future__ import annotations

import numpy as np


def int_gemm_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """C[m, n] = sum_k x[m, k] * w[n, k] in int64, narrowed to int32."""
    return (x.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)


def round_half_away(v: np.ndarray) -> np.ndarray:
    """Round half away from zero, exact for float32 inputs (computed in float64), like C roundf / fcvtas."""
    v = np.asarray(v, dtype=np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def quantize_group_ref(x: np.ndarray, qmax: int) -> tuple[np.ndarray, np.float32]:
    """scale = max|x| / qmax in float32 (1 if all zero); q = clamp(round_half_away(x / scale)) with a float32 divide."""
    x = np.asarray(x, dtype=np.float32)
    amax = np.float32(np.abs(x).max()) if x.size else np.float32(0)
    scale = np.float32(amax / np.float32(qmax)) if amax > 0 else np.float32(1.0)
    q = np.clip(round_half_away(x / scale), -qmax, qmax).astype(np.int8)
    return q, scale


def n8_ref(m: int, ratio8: float) -> int:
    if ratio8 <= 0:
        return 0
    if ratio8 >= 1:
        return m
    return min(m, int(np.floor(ratio8 * m + 0.5)))


def topk_mask_ref(importance: np.ndarray, ratio8: float) -> np.ndarray:
    """1 for the n8 most important tokens (ties: lower index first)."""
    imp = np.asarray(importance, dtype=np.float32).reshape(-1)
    order = sorted(range(imp.size), key=lambda i: (-float(imp[i]), i))
    mask = np.zeros(imp.size, np.uint8)
    mask[order[: n8_ref(imp.size, ratio8)]] = 1
    return mask


def mixed_linear_ref(x: np.ndarray, w_int: np.ndarray, w_scale: np.ndarray, ratio8: float = 0.5,
                     importance: np.ndarray | None = None, mask8: np.ndarray | None = None):
    """Reference of squat_mixed_linear_f32 (same weights for both groups): returns (y, mask, (s8, s4))."""
    x = np.asarray(x, dtype=np.float32)
    m, _ = x.shape
    n = w_int.shape[0]
    mask = (np.asarray(mask8).reshape(m) != 0).astype(np.uint8) if mask8 is not None else topk_mask_ref(importance, ratio8)
    ws = np.asarray(w_scale, dtype=np.float32).reshape(-1)
    ws = np.broadcast_to(ws if ws.size == n else ws[:1], (n,))
    y = np.zeros((m, n), np.float32)
    scales = [0.0, 0.0]
    for g, (want, qmax) in enumerate(((1, 127), (0, 7))):
        rows = np.nonzero(mask == want)[0]
        if rows.size == 0:
            continue
        q, s = quantize_group_ref(x[rows], qmax)
        scales[g] = float(s)
        c = int_gemm_ref(q, w_int)
        y[rows] = c.astype(np.float32) * (np.float32(s) * ws).astype(np.float32)
    return y, mask, tuple(scales)


def qlinear_ref(x: np.ndarray, w_int: np.ndarray, w_scale, bias, site, high=None, high_mask=None):
    """Python reference of ``squat_qlinear_run``: every row quantized by the export's own ``ActSite.quantize``
    (torch: float32 divide, round half to even, clamp), the integer matmul in int64, then
    ``y = float32(sum (q - zp) w) * float32(s_x * s_w) (+ bias)`` with one float32 rounding per operation.
    Returns ``(y float32 [M, N], row_scale float32 [M])``."""
    import torch

    x = np.ascontiguousarray(x, dtype=np.float32)
    m = x.shape[0]
    n = w_int.shape[0]
    ws = np.asarray(w_scale, dtype=np.float32).reshape(-1)
    ws = np.broadcast_to(ws if ws.size == n else ws[:1], (n,))
    hm = np.zeros(m, bool) if high_mask is None else (np.asarray(high_mask).reshape(m) != 0)
    y = np.empty((m, n), np.float32)
    scales = np.empty(m, np.float32)
    wt = w_int.astype(np.int64).T
    for rows, s in ((np.nonzero(~hm)[0], site), (np.nonzero(hm)[0], high)):
        if rows.size == 0:
            continue
        q, sx = s.quantize(torch.from_numpy(x[rows]))
        sx = np.broadcast_to(sx.numpy().astype(np.float32).reshape(-1, 1), (rows.size, 1))
        acc = (q.numpy().astype(np.int64) - int(s.zero_point)) @ wt
        v = acc.astype(np.float32) * (sx * ws[None, :])
        y[rows] = v if bias is None else v + np.asarray(bias, np.float32)[None, :]
        scales[rows] = sx[:, 0]
    return y, scales
