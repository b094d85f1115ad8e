"""Numpy/torch references mirroring ``native_kernels/ref`` exactly (the Python-side oracle)."""
from __future__ import annotations

import numpy as np


def int_gemm_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """C[m, n] = sum_k x[m, k] * w[n, k] in int64, narrowed to int32."""
    return (x.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)


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
