"""Run the linears of an exported integer model (``squat.export`` format ``squat-int/1``) through the kernels."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squat.kernels.binding import KernelLib, PackedWeights
from squat.kernels.reference import round_half_away


@dataclass
class LinearSpec:
    name: str
    out_features: int  # N
    in_features: int  # K
    weight_bits: int
    act_bits: int


def read_manifest(export_dir: str | Path) -> dict[str, LinearSpec]:
    man = json.loads((Path(export_dir) / "manifest.json").read_text())
    out = {}
    for name, d in man["linears"].items():
        out[name] = LinearSpec(name, int(d["out_features"]), int(d["in_features"]), int(d.get("weight_bits", 8)),
                               int(d.get("act_bits", 8) or 8))
    return out


def load_int_weights(export_dir: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """{linear: {"w": int8 [N, K] unpacked, "w_scale": f32, "act_scale": f32, "act_zero_point": i32}}."""
    import torch
    from safetensors.torch import load_file

    from squat.export import unpack_int4

    specs = read_manifest(export_dir)
    t = load_file(str(Path(export_dir) / "quantized.safetensors"))
    out = {}
    for name, s in specs.items():
        wq = t[f"{name}.weight_q"]
        w = unpack_int4(wq, s.in_features) if s.weight_bits == 4 else wq.to(torch.int8)
        d = {"w": w.numpy().astype(np.int8), "w_scale": t[f"{name}.weight_scale"].float().numpy().reshape(-1)}
        if f"{name}.act_scale" in t:
            d["act_scale"] = t[f"{name}.act_scale"].float().numpy().reshape(-1)
            d["act_zero_point"] = t[f"{name}.act_zero_point"].to(torch.int32).numpy().reshape(-1)
        out[name] = d
    return out


class KernelLinear:
    """y = act_scale * w_scale * (C - zp * rowsum(W)), C from the fastest available kernel for the precision."""

    def __init__(self, lib: KernelLib, spec: LinearSpec, tensors: dict[str, np.ndarray], kernel: str | None = None):
        self.spec, self.lib = spec, lib
        prec = f"w{spec.weight_bits}a{spec.act_bits}" if spec.weight_bits == 4 else "w8a8"
        self.kernel = lib.get(kernel) if kernel else lib.default(prec)
        self.w = tensors["w"]
        self.packed: PackedWeights = lib.pack_weights(self.kernel, self.w)
        self.w_scale = tensors["w_scale"].astype(np.float32)
        self.act_scale = np.float32(tensors.get("act_scale", np.ones(1, np.float32))[0])
        self.zp = int(tensors.get("act_zero_point", np.zeros(1, np.int32))[0])
        self.rowsum = self.w.astype(np.int64).sum(axis=1)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        b = self.spec.act_bits
        q = round_half_away(np.asarray(x, np.float32) / self.act_scale) + self.zp
        return np.clip(q, -(2 ** (b - 1)), 2 ** (b - 1) - 1).astype(np.int8)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        c = self.lib.matmul(self.quantize(x), self.packed).astype(np.int64)
        acc = (c - self.zp * self.rowsum[None, :]).astype(np.float32)
        return acc * (self.act_scale * self.w_scale).astype(np.float32)


def load_model(lib: KernelLib, export_dir: str | Path) -> dict[str, KernelLinear]:
    specs, tensors = read_manifest(export_dir), load_int_weights(export_dir)
    return {n: KernelLinear(lib, s, tensors[n]) for n, s in specs.items()}
