"""Where (attention): quantized q, k, v and softmax probabilities inside a function registered with
transformers' attention interface, so Hugging Face modeling code is used as is.

``prepare`` attaches an :class:`AttentionQuantizers` to each attention module; the registered ``"squat"``
function finds it there. Without one it runs exactly the eager attention ops. It also fills a per-forward
:class:`AttentionRecord` with what the losses need, only when asked.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import repeat_kv

from squat.quant.token_policy import TokenAdaptiveQuantizer, TokenPrecisionState

ATTN_IMPLEMENTATION = "squat"


class AttentionRecord:
    """Per-forward, per-layer tensors for the losses. Only what is switched on is kept, and ``clear()`` is
    called before each student forward so nothing accumulates across steps."""

    def __init__(self) -> None:
        self.keep_qk = False  # entropy loss: quantized q and k
        self.keep_maps = False  # distribution loss: attention probabilities
        self.clear()

    def clear(self) -> None:
        self.q: dict[int, torch.Tensor] = {}
        self.k: dict[int, torch.Tensor] = {}
        self.maps: dict[int, torch.Tensor] = {}

    def stacked(self, name: str) -> torch.Tensor:
        d = getattr(self, name)
        return torch.stack([d[i] for i in sorted(d)])


class AttentionQuantizers(nn.Module):
    """The q, k, v and probability quantizers of one attention layer (``nn.Identity`` where off)."""

    def __init__(self, q: nn.Module, k: nn.Module, v: nn.Module, probs: nn.Module, layer: int,
                 state: TokenPrecisionState | None, record: AttentionRecord):
        super().__init__()
        self.q, self.k, self.v, self.probs = q, k, v, probs
        self.layer = layer
        # Causal token rule: this layer's importance threshold (NaN until the first forward calibrates it).
        self.register_buffer("token_threshold", torch.full((1,), float("nan")))
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "record", record)
        self.integer: dict | None = None  # exported sites {q, k, v, probs}, set by squat.export.integer_reference


def _quant(quantizer: nn.Module, x: torch.Tensor, high: torch.Tensor | None) -> torch.Tensor:
    if isinstance(quantizer, TokenAdaptiveQuantizer):
        return quantizer.quantize(x, high)
    return quantizer(x)


def _integer_scores(sites, query, key, qmask, kmask):
    """``q @ k^T`` as one integer matmul and one rescale (per-token scales of q rows and k columns)."""
    qc, sq = sites["q"].centered(query, qmask)
    kc, sk = sites["k"].centered(key, kmask)
    acc = qc @ kc.transpose(-1, -2)
    return acc * sq * (sk.transpose(-1, -2) if sk.dim() > 1 else sk)


def _integer_pv(sites, probs, value, vmask):
    """``probs @ v`` in integers: one matmul per value scale group (a per-tensor v has one; token-adaptive v
    has two, split by the mask), each with its own rescale. Per-token dynamic v scales vary along the
    contracted axis, so that case dequantizes v first (documented float fallback)."""
    pc, sp = sites["probs"].centered(probs)
    v = sites["v"]
    if v.high is not None and vmask is not None and v.mode == v.high.mode == "static":
        ch, sh = v.high.centered(value)
        cl, sl = v.centered(value)
        m = vmask[:, None, :, None].double()
        return (pc @ (ch * m)) * sp * sh + (pc @ (cl * (1 - m))) * sp * sl
    vc, sv = v.centered(value, vmask)
    if sv.numel() == 1:
        return (pc @ vc) * sp * sv
    return (pc @ (vc * sv)) * sp


def squat_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention with fake-quantized q, k (after rotary), v and probabilities.

    query ``(B, H, T, D)``; key, value ``(B, Hkv, S, D)`` with S >= T (KV cache); returns ``(B, T, H, D)``.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    aq: AttentionQuantizers | None = getattr(module, "attn_quant", None)
    state = aq.state if aq is not None else None
    sites = aq.integer if aq is not None else None
    if sites and not (sites["q"].is_float or sites["k"].is_float):
        qmask = state.input_mask(aq.layer) if state else None
        kmask = state.key_mask(aq.layer) if state else None
        scores = _integer_scores(sites, query, key, qmask, kmask).to(query.dtype) * scaling
    else:
        if aq is not None:
            query = _quant(aq.q, query, state.input_mask(aq.layer) if state else None)
            key = _quant(aq.k, key, state.key_mask(aq.layer) if state else None)
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T, S)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)

    if aq is None:
        probs_d = nn.functional.dropout(probs, p=dropout, training=module.training)
        return torch.matmul(probs_d, value).transpose(1, 2).contiguous(), probs
    if state is not None:
        state.update(aq.layer, probs, scores, threshold=aq.token_threshold, training=aq.training)
    vmask = state.value_mask(aq.layer) if state else None
    if sites and not (sites["probs"].is_float or sites["v"].is_float):
        out = _integer_pv(sites, probs, value, vmask).to(query.dtype)
        return out.transpose(1, 2).contiguous(), probs
    value = _quant(aq.v, value, vmask)
    probs = aq.probs(probs)
    rec = aq.record
    if rec.keep_qk:
        rec.q[aq.layer], rec.k[aq.layer] = query, key
    if rec.keep_maps:
        rec.maps[aq.layer] = probs
    probs_d = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs_d, value).transpose(1, 2).contiguous()
    return out, probs


def register() -> None:
    """Make ``attn_implementation="squat"`` known to transformers (idempotent)."""
    ALL_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, squat_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, eager_mask)


register()
