"""Run the linears of an exported integer model (read by :class:`squat.export.ExportedModel`) through the kernels.

Widths map onto the kernels' ranges: weights of 2 to 4 bits run on the 4-bit-weight kernels (their values lie
in [-8, 7]), 5 to 8 bits on the int8 ones; activations of up to 4 bits on the W4A4 path, 5 to 8 bits on the
8-bit-activation paths. Activations are quantized with the model's own scales and zero points, as in training.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from squat.export import ActSite, ExportedLinear, ExportedModel
from squat.kernels.binding import KernelLib, PackedWeights


def precision(weight_bits: int, act_bits: int) -> str:
    """Kernel precision for a linear: ``w8a8``, ``w4a8`` or ``w4a4``."""
    if weight_bits > 4:
        return "w8a8"
    return "w4a4" if act_bits <= 4 else "w4a8"


@dataclass
class LinearSpec:
    name: str
    out_features: int  # N
    in_features: int  # K
    weight_bits: int
    act_bits: int  # low precision of an adaptive site; 8 for a float input


def read_manifest(export_dir: str | Path | ExportedModel) -> dict[str, LinearSpec]:
    exp = export_dir if isinstance(export_dir, ExportedModel) else ExportedModel(export_dir)
    return {n: LinearSpec(n, l.out_features, l.in_features, l.weight_bits, l.act.bits or 8) for n, l in exp.linears.items()}


def load_int_weights(export_dir: str | Path | ExportedModel) -> dict[str, dict[str, np.ndarray]]:
    """{linear: {"w": int8 [N, K] unpacked, "w_scale": f32}} for the kernel benchmark's exactness check."""
    exp = export_dir if isinstance(export_dir, ExportedModel) else ExportedModel(export_dir)
    return {n: {"w": l.w.numpy(), "w_scale": l.w_scale.numpy().reshape(-1)} for n, l in exp.linears.items()}


class KernelLinear:
    """``y = s_x * s_w * (C - zp * rowsum(W)) + bias``, C from the fastest available kernel for each precision.

    A token-adaptive input runs two groups: the rows of ``high`` tokens with the high-precision site on the
    8-bit-activation kernel, the rest with the low site, each with its own trained scale and zero point.
    """

    def __init__(self, lib: KernelLib, lin: ExportedLinear):
        if lin.act.is_float:
            raise ValueError(f"{lin.name}: its input is not quantized, so no integer kernel runs it")
        self.lin, self.lib = lin, lib
        self.rowsum = lin.rowsum.numpy()
        self.w_scale = lin.w_scale.numpy().astype(np.float32)
        self.bias = None if lin.bias is None else lin.bias.numpy().astype(np.float32)
        self.paths: dict[str, tuple[ActSite, PackedWeights]] = {"low": self._path(lin.act)}
        if lin.act.high is not None:
            self.paths["high"] = self._path(lin.act.high)

    def _path(self, site: ActSite) -> tuple[ActSite, PackedWeights]:
        kernel = self.lib.default(precision(self.lin.weight_bits, site.bits))
        return site, self.lib.pack_weights(kernel, self.lin.w.numpy())

    def _run(self, x: np.ndarray, which: str) -> np.ndarray:
        site, packed = self.paths[which]
        q, s = site.quantize(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
        acc = self.lib.matmul(q.numpy().astype(np.int8), packed).astype(np.int64)
        y = (acc - site.zero_point * self.rowsum[None, :]).astype(np.float32)
        y = y * (s.numpy().astype(np.float32) * self.w_scale)
        return y if self.bias is None else y + self.bias

    def __call__(self, x: np.ndarray, high: np.ndarray | None = None) -> np.ndarray:
        """x: float32 [M, K]; high: optional bool [M] (adaptive inputs; None = all high precision)."""
        if "high" not in self.paths:
            return self._run(x, "low")
        if high is None:
            return self._run(x, "high")
        y = np.empty((x.shape[0], self.lin.out_features), np.float32)
        for which, rows in (("high", np.nonzero(high)[0]), ("low", np.nonzero(~high)[0])):
            if rows.size:
                y[rows] = self._run(x[rows], which)
        return y


def load_model(lib: KernelLib, export_dir: str | Path | ExportedModel) -> dict[str, KernelLinear]:
    exp = export_dir if isinstance(export_dir, ExportedModel) else ExportedModel(export_dir)
    return {n: KernelLinear(lib, l) for n, l in exp.linears.items() if not l.act.is_float}
