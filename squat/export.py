"""Integer export of a quantized student: packed weights, scales, zero points and a JSON manifest.

Layout (format ``squat-int/1``), one ``quantized.safetensors`` plus ``manifest.json``:

- ``{linear}.weight_q``: 8-bit weights as int8 ``[N, K]``; 4-bit weights packed two per byte as uint8
  ``[N, ceil(K / 2)]`` (element ``k`` even in the low nibble, ``k + 1`` in the high nibble, two's complement).
- ``{linear}.weight_scale``: float32 ``[N]`` (per output channel) or ``[1]`` (per tensor).
- ``{linear}.act_scale`` / ``{linear}.act_zero_point``: float32 / int32 ``[1]`` for the input activation in the
  signed range ``[-2^(b-1), 2^(b-1) - 1]``; the real value is ``(q - zero_point) * scale``.

A linear then computes ``y = act_scale * weight_scale * (q_x @ q_w^T - zero_point * rowsum(q_w))``:
one integer matmul and one float rescale, which is what ``native_kernels`` executes.
"""
from __future__ import annotations

import torch


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack int values in [-8, 7] of shape ``[N, K]`` into uint8 ``[N, ceil(K/2)]``, two per byte."""
    if q.dim() != 2:
        raise ValueError(f"pack_int4 expects a 2-D tensor, got shape {tuple(q.shape)}")
    q = q.to(torch.int16)
    if q.numel() and (q.min() < -8 or q.max() > 7):
        raise ValueError("pack_int4: values must lie in [-8, 7]")
    n, k = q.shape
    if k % 2:
        q = torch.nn.functional.pad(q, (0, 1))
    nib = (q & 0xF).to(torch.uint8)
    return (nib[:, 0::2] | (nib[:, 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: uint8 ``[N, ceil(K/2)]`` -> int8 ``[N, K]``."""
    p = packed.to(torch.int16)
    lo, hi = p & 0xF, (p >> 4) & 0xF
    out = torch.stack([lo, hi], dim=-1).reshape(p.shape[0], -1)[:, :k]
    return torch.where(out > 7, out - 16, out).to(torch.int8)


# ---------------------------------------------------------------------------------------------------------
# Export and the integer reference forward.
import copy  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch.nn as nn  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from squat.quant.attention import centered_int  # noqa: E402
from squat.quant.linear import QuantLinear  # noqa: E402
from squat.quant.quantizers import MinMaxQuantizer, Quantizer  # noqa: E402
from squat.quant.token_policy import TokenAdaptiveQuantizer  # noqa: E402
from squat.utils import plain  # noqa: E402

FORMAT = "squat-int/1"
TENSORS_FILE = "quantized.safetensors"
MANIFEST_FILE = "manifest.json"


def _act_entry(q: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    """Manifest fields and tensors of an activation quantizer (static scale/zp, dynamic, or float)."""
    if isinstance(q, nn.Identity):
        return {"act_bits": None, "act_mode": "float"}, {}
    parts = {"": q} if isinstance(q, Quantizer) else {"_low": q.low, "_high": q.high}
    entry = {
        "act_bits": q.bits if isinstance(q, Quantizer) else q.low.bits,
        "act_bits_high": None if isinstance(q, Quantizer) else q.high.bits,
        "act_mode": "dynamic_per_token" if isinstance(next(iter(parts.values())), MinMaxQuantizer) else "static",
    }
    tensors = {}
    if entry["act_mode"] == "static":
        for suffix, sub in parts.items():
            if not sub._ready:
                raise RuntimeError("export needs calibrated quantizers: run squat.quant.prepare.calibrate first")
            probe = torch.zeros(1, 1, 1, dtype=sub.scale.dtype if hasattr(sub, "scale") else torch.float32)
            _, s, zp = sub.int_repr(probe)
            tensors[f"act_scale{suffix}"] = s.reshape(1).float()
            tensors[f"act_zero_point{suffix}"] = zp.reshape(1).to(torch.int32)
    return entry, tensors


@torch.no_grad()
def export_model(model: nn.Module, out_dir: str | Path) -> dict:
    """Write the prepared student as integers (format ``squat-int/1``); returns the manifest."""
    handle = getattr(model, "squat_quant", None)
    if handle is None:
        raise ValueError("export_model needs a quantized student (squat.quant.prepare.quantize_model)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    linears = {}
    for name, lin in model.named_modules():
        if not isinstance(lin, QuantLinear) or isinstance(lin.weight_quant, nn.Identity):
            continue
        wq = lin.weight_quant
        q, s, _ = wq.int_repr(lin.weight_nk().detach().float())
        if wq.bits <= 4:
            tensors[f"{name}.weight_q"] = pack_int4(q)
        else:
            tensors[f"{name}.weight_q"] = q.to(torch.int8).contiguous()
        tensors[f"{name}.weight_scale"] = s.reshape(-1).float().contiguous()
        if lin.bias is not None:
            tensors[f"{name}.bias"] = lin.bias.detach().float().contiguous()
        entry, act_t = _act_entry(lin.act_quant)
        tensors.update({f"{name}.{k}": v for k, v in act_t.items()})
        linears[name] = {
            "in_features": lin.in_features,
            "out_features": lin.out_features,
            "weight_bits": wq.bits,
            "weight_packing": "int4x2_lownibble_first" if wq.bits <= 4 else "int8",
            "granularity": "per_channel" if s.numel() > 1 else "per_tensor",
            **entry,
        }
    tp = handle.config.token_policy
    manifest = {
        "format": FORMAT,
        "model_type": model.config.model_type,
        "family": handle.family,
        "method": handle.method,
        "num_layers": model.config.num_hidden_layers,
        "quant": plain(handle.config),
        "token_policy": plain(tp) if tp.enabled else None,
        "linears": linears,
    }
    save_file(tensors, str(out / TENSORS_FILE))
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


def load_export(export_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    d = Path(export_dir)
    for f in (MANIFEST_FILE, TENSORS_FILE):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d / f} missing: write it with squat.export.export_model")
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{d}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest, load_file(str(d / TENSORS_FILE))


def exported_weight(manifest: dict, tensors: dict, name: str) -> torch.Tensor:
    """The integer weight of linear ``name`` as int8 ``[N, K]``."""
    meta = manifest["linears"][name]
    q = tensors[f"{name}.weight_q"]
    return unpack_int4(q, meta["in_features"]) if meta["weight_bits"] <= 4 else q


class IntegerLinear(nn.Module):
    """``y = s_x * s_w * (c_x @ q_w^T) + b`` with ``c_x = q_x - zp``: one exact integer matmul (in float64,
    exact below 2^53) and one float rescale, from the exported integers, as the kernel computes it."""

    def __init__(self, q_w: torch.Tensor, s_w: torch.Tensor, bias: torch.Tensor | None, act_quant: nn.Module):
        super().__init__()
        self.register_buffer("q_w", q_w.double())
        self.register_buffer("s_w", s_w.double().reshape(1, -1))
        self.register_buffer("bias", bias.double() if bias is not None else None)
        self.act_quant = act_quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.act_quant
        if isinstance(q, nn.Identity):
            xc, sx = x.double(), torch.ones(1, dtype=torch.float64)
        else:
            high = None
            if isinstance(q, TokenAdaptiveQuantizer):
                st = q.state
                high = st.input_mask(q.layer) if q.which == "input" else st.output_mask(q.layer)
            xc, sx = centered_int(q, x, high)
        acc = xc @ self.q_w.t()
        y = acc * (sx * self.s_w)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)


def integer_reference(model: nn.Module, export_dir: str | Path) -> nn.Module:
    """A copy of the fake-quant student whose quantized linears and attention matmuls run in integers, with
    weights read back from the export. Its logits reproduce the fake-quant model's."""
    manifest, tensors = load_export(export_dir)
    ref = copy.deepcopy(model).eval()
    for name in manifest["linears"]:
        lin = ref.get_submodule(name)
        parent_name, _, attr = name.rpartition(".")
        parent = ref.get_submodule(parent_name) if parent_name else ref
        setattr(parent, attr, IntegerLinear(
            exported_weight(manifest, tensors, name), tensors[f"{name}.weight_scale"], tensors.get(f"{name}.bias"),
            lin.act_quant,
        ))
    for m in ref.modules():
        if hasattr(m, "attn_quant"):
            m.attn_quant.integer = True
    return ref
