"""Integer export of a quantized student, and its one reader.

Format ``squat-int/2``: one ``quantized.safetensors`` plus ``manifest.json``, everything a runtime needs to run
the whole model without Python's quantizer modules:

- ``config``: the Hugging Face config (architecture, RoPE, norm epsilon, vocabulary).
- ``linears``: per quantized linear (HF module path) ``{in_features, out_features, weight_bits, packing, granularity,
  bias, act}``; tensors ``{name}.weight_q``, ``{name}.weight_scale`` (float32 ``[N]`` or ``[1]``) and ``{name}.bias``.
  Weights of 2 to 4 bits are packed two per byte (``int4x2``: element ``k`` even in the low nibble, ``k + 1`` in the
  high nibble, two's complement; values stay in their own range), 5 to 8 bits as int8 (``int8``).
- ``sites``: every activation quantizer once (a linear's ``act`` names its input site; q/k/v projections share one),
  ``{mode, bits, qmin, qmax, adaptive, high}``: ``mode`` is ``float``, ``static`` (tensors ``{site}.scale``,
  ``{site}.zero_point``) or ``dynamic_per_token``. Integers use the signed convention: ``q`` in ``[qmin, qmax]`` inside
  ``[-2^(b-1), 2^(b-1) - 1]`` (an unsigned grid is shifted by ``2^(b-1)``, the shift folded into the zero point), and
  ``q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)`` in float32, ``x_hat = (q - zero_point) * scale``.
  A token-adaptive site (``adaptive``: ``input`` = precisions chosen by the previous layer, ``output`` = by this
  layer) has a ``high`` entry of the same shape (tensors ``{site}.high.scale`` ...) for its 8-bit tokens.
- ``layers``: per block, the site names of ``attn_input, q, k, v, probs, o_proj_input, mlp_input, mlp_down_input``
  (``null`` = float) and the causal token rule's ``token_threshold``; ``token_policy``: the rule and ratio.
- ``float``: the remaining float parameters (embeddings, norms, untied head, GPT-2 positions) as float32 tensors
  ``float.{hf name}``.

A linear computes ``y = s_x * s_w * (q_x @ q_w^T - zero_point * rowsum(q_w)) + bias``: one integer matmul and one
float rescale, which is what ``native_kernels`` executes. :class:`ExportedModel` is the only reader: the integer
reference below, the kernel path (``squat.kernels.model``) and the benchmark all load through it.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from squat.quant.linear import QuantLinear
from squat.quant.prepare import linear_site
from squat.quant.quantizers import EPS, MinMaxQuantizer, Quantizer, exact_matmul
from squat.quant.token_policy import TokenAdaptiveQuantizer
from squat.utils import plain

FORMAT = "squat-int/2"
TENSORS_FILE = "quantized.safetensors"
MANIFEST_FILE = "manifest.json"
PACKINGS = {"int4x2": range(2, 5), "int8": range(5, 9)}
ATTN_SITES = ("attn_input", "q", "k", "v", "probs", "o_proj_input", "mlp_input", "mlp_down_input")


class ExportError(ValueError):
    """An export that cannot be written or read as ``squat-int/2``; the message names the fix."""


# ------------------------------------------------------------------------------------------------- packing
def packing_for(bits: int) -> str:
    for name, widths in PACKINGS.items():
        if bits in widths:
            return name
    raise ExportError(f"{bits}-bit weights cannot be exported: supported widths are 2 to 8")


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack int values in [-8, 7] of shape ``[N, K]`` into uint8 ``[N, ceil(K/2)]``, two per byte."""
    if q.dim() != 2:
        raise ValueError(f"pack_int4 expects a 2-D tensor, got shape {tuple(q.shape)}")
    q = q.to(torch.int16)
    if q.numel() and (q.min() < -8 or q.max() > 7):
        raise ValueError("pack_int4: values must lie in [-8, 7]")
    if q.shape[1] % 2:
        q = torch.nn.functional.pad(q, (0, 1))
    nib = (q & 0xF).to(torch.uint8)
    return (nib[:, 0::2] | (nib[:, 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: uint8 ``[N, ceil(K/2)]`` -> int8 ``[N, K]``."""
    p = packed.to(torch.int16)
    lo, hi = p & 0xF, (p >> 4) & 0xF
    out = torch.stack([lo, hi], dim=-1).reshape(p.shape[0], -1)[:, :k]
    return torch.where(out > 7, out - 16, out).to(torch.int8)


def pack_weight(q: torch.Tensor, bits: int) -> torch.Tensor:
    lim = 2 ** (bits - 1)
    if q.numel() and (q.min() < -lim or q.max() > lim - 1):
        raise ExportError(f"{bits}-bit weight has values outside [{-lim}, {lim - 1}]")
    return pack_int4(q) if packing_for(bits) == "int4x2" else q.to(torch.int8).contiguous()


def unpack_weight(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    return unpack_int4(packed, k) if packing_for(bits) == "int4x2" else packed.to(torch.int8)


# ------------------------------------------------------------------------------------------------- sites
@dataclass
class ActSite:
    """One activation quantizer as exported: enough to quantize a float tensor exactly as the student does."""

    name: str
    mode: str  # "float" | "static" | "dynamic_per_token"
    bits: int | None = None
    qmin: int | None = None
    qmax: int | None = None
    scale: float | None = None  # static: float32 value
    zero_point: int | None = None  # static and dynamic, signed convention
    adaptive: str | None = None  # None | "input" | "output": token-adaptive, precisions chosen by which layer
    high: "ActSite | None" = None  # token-adaptive: the quantizer of the high-precision tokens

    @property
    def is_float(self) -> bool:
        return self.mode == "float"

    @property
    def dynamic(self) -> bool:
        return self.mode == "dynamic_per_token" or (self.high is not None and self.high.dynamic)

    @property
    def span(self) -> int:
        """A bound on ``|q - zero_point|``."""
        return max(self.qmax - self.qmin, self.high.span if self.high is not None else 0)

    @property
    def low(self) -> "ActSite":
        """The low-precision quantizer of an adaptive site (the site itself without its high twin)."""
        return ActSite(self.name, self.mode, self.bits, self.qmin, self.qmax, self.scale, self.zero_point)

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q, scale)``: float integer-valued ``q`` (signed convention) and the scale broadcastable to ``x``,
        computed exactly as the student's quantizer does (float32 divide, round half to even, clamp)."""
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        zp = float(self.zero_point)
        if self.mode == "static":
            s = torch.tensor([self.scale], dtype=torch.float32).to(xf.dtype)
        elif self.mode == "dynamic_per_token":  # scale = max|x| / (levels above the zero point), per token
            s = (xf.detach().abs().amax(-1, keepdim=True) / (self.qmax - zp)).clamp_min(EPS)
        else:
            raise ExportError(f"site {self.name} is float: it has no integer form")
        return torch.clamp(torch.round(xf / s) + zp, self.qmin, self.qmax), s

    def centered(self, x: torch.Tensor, high: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q - zero_point, scale)`` as float64 (exact integers) with the scale broadcastable to ``x``: what the
        integer kernels multiply. ``high``: ``[B, T]`` bool over ``x``'s token axis (dim -2) for adaptive sites."""
        if self.high is not None:
            if high is None:
                return self.high.centered(x)
            ch, sh = self.high.centered(x)
            cl, sl = self.low.centered(x)
            m = high.view(*high.shape[:1], *([1] * (x.dim() - 3)), high.shape[1], 1)
            return torch.where(m, ch, cl), torch.where(m, sh, sl)
        q, s = self.quantize(x)
        return q.double() - float(self.zero_point), s.double()

    def to_manifest(self) -> dict:
        d = {"mode": self.mode}
        if self.mode != "float":
            d.update(bits=self.bits, qmin=self.qmin, qmax=self.qmax)
        if self.mode == "dynamic_per_token":
            d.update(zero_point=self.zero_point)
        if self.adaptive:
            d.update(adaptive=self.adaptive, high=self.high.to_manifest())
        return d


def _site_of(name: str, q: nn.Module) -> tuple[ActSite, dict[str, torch.Tensor]]:
    """The export form of an activation quantizer module (``nn.Identity``, a :class:`Quantizer` or a
    :class:`TokenAdaptiveQuantizer`) and its tensors."""
    if isinstance(q, nn.Identity):
        return ActSite(name, "float"), {}
    if isinstance(q, TokenAdaptiveQuantizer):
        low, lt = _site_of(name, q.low)
        high, ht = _site_of(name + ".high", q.high)
        low.adaptive, low.high = q.which, high
        return low, {**lt, **ht}
    if not isinstance(q, Quantizer):
        raise ExportError(f"{name}: cannot export a {type(q).__name__}")
    if not q._ready:
        raise ExportError(f"{name}: quantizer not calibrated: run squat.quant.prepare.calibrate before exporting")
    shift = 0 if q.signed else 2 ** (q.bits - 1)
    qmin, qmax = q.qmin - shift, q.qmax - shift
    if isinstance(q, MinMaxQuantizer):
        if q.granularity != "per_token":
            raise ExportError(f"{name}: dynamic per-tensor activations are not exportable (use per_token)")
        return ActSite(name, "dynamic_per_token", q.bits, qmin, qmax, zero_point=-shift), {}
    _, s, zp = q.int_repr(torch.zeros(1, 1, 1))
    site = ActSite(name, "static", q.bits, qmin, qmax, float(s.reshape(-1)[0]), int(zp.reshape(-1)[0]))
    return site, {f"{name}.scale": s.reshape(1).float(), f"{name}.zero_point": zp.reshape(1).to(torch.int32)}


def _site_from(name: str, d: dict, tensors: dict[str, torch.Tensor]) -> ActSite:
    site = ActSite(name, d["mode"], d.get("bits"), d.get("qmin"), d.get("qmax"), zero_point=d.get("zero_point"))
    if site.mode == "static":
        site.scale = float(_tensor(tensors, f"{name}.scale"))
        site.zero_point = int(_tensor(tensors, f"{name}.zero_point"))
    if d.get("adaptive"):
        site.adaptive, site.high = d["adaptive"], _site_from(name + ".high", d["high"], tensors)
    return site


def _tensor(tensors: dict, key: str) -> torch.Tensor:
    if key not in tensors:
        raise ExportError(f"{TENSORS_FILE} has no tensor {key!r}: the export is truncated or from another model; "
                          "export it again with squat.export.export_model")
    return tensors[key]


# ------------------------------------------------------------------------------------------------- writer
def _attention_layers(model: nn.Module) -> list[nn.Module]:
    return [m.attn_quant for m in model.modules() if hasattr(m, "attn_quant")]


@torch.no_grad()
def export_model(model: nn.Module, out_dir: str | Path) -> dict:
    """Write the prepared student as integers (format ``squat-int/2``); returns the manifest."""
    handle = getattr(model, "squat_quant", None)
    if handle is None:
        raise ExportError("export_model needs a quantized student (squat.quant.prepare.quantize_model)")
    tensors: dict[str, torch.Tensor] = {}
    sites: dict[str, dict] = {}
    site_names: dict[int, str] = {}  # id(quantizer module) -> site name (q/k/v projections share one)

    def site(name: str, q: nn.Module) -> str | None:
        if isinstance(q, nn.Identity):
            return None
        if id(q) not in site_names:
            s, t = _site_of(name, q)
            sites[name], site_names[id(q)] = s.to_manifest(), name
            tensors.update(t)
        return site_names[id(q)]

    layers: list[dict] = [dict.fromkeys(ATTN_SITES) for _ in range(model.config.num_hidden_layers)]
    for aq in _attention_layers(model):
        layers[aq.layer].update({k: site(f"layers.{aq.layer}.{k}", getattr(aq, k)) for k in ("q", "k", "v", "probs")})
        thr = aq.token_threshold
        layers[aq.layer]["token_threshold"] = None if torch.isnan(thr).any() else float(thr)

    linears, exported_params = {}, set()
    for name, lin in model.named_modules():
        if not isinstance(lin, QuantLinear) or isinstance(lin.weight_quant, nn.Identity):
            continue
        wq = lin.weight_quant
        q, s, _ = wq.int_repr(lin.weight_nk().detach().float())
        tensors[f"{name}.weight_q"] = pack_weight(q, wq.bits)
        tensors[f"{name}.weight_scale"] = s.reshape(-1).float().contiguous()
        if lin.bias is not None:
            tensors[f"{name}.bias"] = lin.bias.detach().float().contiguous()
        exported_params.update({id(lin.weight), id(lin.bias)})
        layer_idx, kind = linear_site(handle.family, name)
        act_name = f"layers.{layer_idx}.{kind}" if layer_idx is not None else f"{name}.input"
        act = site(act_name, lin.act_quant)
        if layer_idx is not None:
            layers[layer_idx][kind] = act
        linears[name] = {
            "in_features": lin.in_features, "out_features": lin.out_features, "weight_bits": wq.bits,
            "packing": packing_for(wq.bits), "granularity": "per_channel" if s.numel() > 1 else "per_tensor",
            "bias": lin.bias is not None, "act": act,
        }
    floats = []
    for name, p in model.named_parameters():  # shared (tied) parameters are listed once
        if id(p) in exported_params or "_quant." in name:
            continue
        tensors[f"float.{name}"] = p.detach().float().contiguous()
        floats.append(name)
    tp = handle.config.token_policy
    manifest = {
        "format": FORMAT,
        "model_type": model.config.model_type,
        "family": handle.family,
        "method": handle.method,
        "num_layers": model.config.num_hidden_layers,
        "config": model.config.to_dict(),
        "quant": plain(handle.config),
        "token_policy": plain(tp) if tp.enabled else None,
        "linears": linears,
        "sites": sites,
        "layers": layers,
        "float": floats,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / TENSORS_FILE))
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


# ------------------------------------------------------------------------------------------------- reader
@dataclass
class ExportedLinear:
    name: str
    in_features: int  # K
    out_features: int  # N
    weight_bits: int
    w: torch.Tensor  # int8 [N, K], unpacked
    w_scale: torch.Tensor  # float32 [N] or [1]
    bias: torch.Tensor | None  # float32 [N]
    act: ActSite

    @property
    def rowsum(self) -> torch.Tensor:
        return self.w.to(torch.int64).sum(1)


class ExportedModel:
    """The one reader of ``squat-int/2``: checks the files, the format and every tensor, then gives typed access.

    A missing file, another format, a truncated tensor file or tensors that disagree with the manifest raise
    :class:`ExportError` (or ``FileNotFoundError``) naming the fix, before anything runs.
    """

    def __init__(self, export_dir: str | Path):
        d = self.dir = Path(export_dir)
        for f in (MANIFEST_FILE, TENSORS_FILE):
            if not (d / f).is_file():
                raise FileNotFoundError(f"{d / f} missing: write the export with squat.export.export_model "
                                        "(a QAT run writes it to <run>/export)")
        try:
            self.manifest = json.loads((d / MANIFEST_FILE).read_text())
        except json.JSONDecodeError as e:
            raise ExportError(f"{d / MANIFEST_FILE} is not valid JSON ({e}): export the model again") from None
        fmt = self.manifest.get("format")
        if fmt != FORMAT:
            raise ExportError(f"{d}: format {fmt!r}, this version reads {FORMAT!r}: export the model again with "
                              "squat.export.export_model (or `squat-train` from the saved student)")
        try:
            self.tensors = load_file(str(d / TENSORS_FILE))
        except (SafetensorError, OSError) as e:
            raise ExportError(f"{d / TENSORS_FILE} cannot be read ({e}): the file is truncated or corrupt; "
                              "export the model again") from None
        m = self.manifest
        self.config: dict = m["config"]
        self.token_policy: dict | None = m.get("token_policy")
        self.sites = {n: _site_from(n, s, self.tensors) for n, s in m["sites"].items()}
        self.layers: list[dict] = m["layers"]
        self.linears: dict[str, ExportedLinear] = {n: self._linear(n, e) for n, e in m["linears"].items()}
        for name in m["float"]:
            _tensor(self.tensors, f"float.{name}")

    def _linear(self, name: str, e: dict) -> ExportedLinear:
        n, k, bits = e["out_features"], e["in_features"], e["weight_bits"]
        packed = _tensor(self.tensors, f"{name}.weight_q")
        want = (n, (k + 1) // 2) if packing_for(bits) == "int4x2" else (n, k)
        if tuple(packed.shape) != want:
            raise ExportError(f"{name}.weight_q has shape {tuple(packed.shape)}, the manifest says {want} "
                              f"({bits}-bit, {n}x{k}): the export is inconsistent; export the model again")
        scale = _tensor(self.tensors, f"{name}.weight_scale")
        if scale.numel() not in (1, n):
            raise ExportError(f"{name}.weight_scale has {scale.numel()} values for {n} output channels")
        act = self.sites[e["act"]] if e["act"] else ActSite(f"{name}.input", "float")
        bias = _tensor(self.tensors, f"{name}.bias") if e["bias"] else None
        return ExportedLinear(name, k, n, bits, unpack_weight(packed, bits, k), scale.float(), bias, act)

    def float_tensor(self, name: str) -> torch.Tensor:
        return _tensor(self.tensors, f"float.{name}")

    def site(self, layer: int, kind: str) -> ActSite:
        """The activation site ``kind`` (one of ``ATTN_SITES``) of block ``layer`` (float if not quantized)."""
        n = self.layers[layer].get(kind)
        return self.sites[n] if n else ActSite(f"layers.{layer}.{kind}", "float")


# ------------------------------------------------------------------------------------------------- integer reference
class IntegerLinear(nn.Module):
    """``y = s_x * s_w * (c_x @ q_w^T) + b`` with ``c_x = q_x - zp``: one exact integer matmul (in float64, exact
    below 2^53) and one float rescale, from the exported integers and scales, as the kernel computes it. The token
    precisions of an adaptive input come from the model's token state (``state``)."""

    def __init__(self, lin: ExportedLinear, state=None, layer: int | None = None):
        super().__init__()
        self.register_buffer("q_w", lin.w.double())
        self.register_buffer("s_w", lin.w_scale.double().reshape(1, -1))
        self.register_buffer("bias", lin.bias.double() if lin.bias is not None else None)
        self.act, self.layer = lin.act, layer
        object.__setattr__(self, "state", state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act.is_float:
            xc, sx = x.double(), torch.ones(1, dtype=torch.float64)
        else:
            high = None
            if self.act.adaptive and self.state is not None:
                st = self.state
                high = st.input_mask(self.layer) if self.act.adaptive == "input" else st.output_mask(self.layer)
            xc, sx = self.act.centered(x, high)
        bound = self.q_w.shape[1] * self.q_w.abs().max().item() * (self.act.span if not self.act.is_float else 2**30)
        y = exact_matmul(xc, self.q_w.t(), bound) * (sx * self.s_w)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)


def integer_reference(model: nn.Module, export_dir: str | Path) -> nn.Module:
    """A copy of the fake-quant student whose quantized linears and attention matmuls run in integers from the
    export's weights and activation scales (read by :class:`ExportedModel`). Norms, RoPE, softmax and the token
    rule run in float as in the student. Its logits reproduce the fake-quant model's."""
    exp = ExportedModel(export_dir)
    ref = copy.deepcopy(model).eval()
    state = ref.squat_quant.state
    for name, lin in exp.linears.items():
        parent_name, _, attr = name.rpartition(".")
        parent = ref.get_submodule(parent_name) if parent_name else ref
        layer, _ = linear_site(exp.manifest["family"], name)
        setattr(parent, attr, IntegerLinear(lin, state, layer))
    for aq in _attention_layers(ref):
        aq.integer = {k: exp.site(aq.layer, k) for k in ("q", "k", "v", "probs")}
    return ref
