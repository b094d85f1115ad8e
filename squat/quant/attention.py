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

from squat.quant.quantizers import exact_matmul
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


def _is_int(q) -> bool:
    return q is not None and not isinstance(q, nn.Identity) and not getattr(q, "is_float", False)


def _integer_scores(q_site, k_site, query, key, qmask, kmask):
    """``q @ k^T`` as one exact integer matmul and the runtime's float32 rescale ``fp32(acc) * fp32(s_q * s_k)``
    (per-token scales of q rows, k columns)."""
    qc, sq = q_site.centered(query, qmask)
    kc, sk = k_site.centered(key, kmask)
    acc = exact_matmul(qc, kc.transpose(-1, -2), query.shape[-1] * q_site.span * k_site.span)
    return acc.float() * (sq.float() * (sk.transpose(-1, -2) if sk.dim() > 1 else sk).float())


def _integer_pv(p_site, v_site, probs, value, vmask):
    """``probs @ v`` in integers: one exact matmul per value scale group (a per-tensor v has one; token-adaptive v
    has two, split by the mask), each rescaled as the runtime does, ``fp32(acc) * fp32(s_p * s_v)`` in float32,
    the groups then added. Per-token dynamic v scales vary along the contracted axis, so that case dequantizes v
    first (float64)."""
    pc, sp = p_site.centered(probs)
    bound = value.shape[-2] * p_site.span * v_site.span
    high = getattr(v_site, "high", None)
    if high is not None and vmask is not None and not v_site.dynamic:
        ch, sh = high.centered(value)
        cl, sl = v_site.low.centered(value)
        m = vmask[:, None, :, None].double()
        return (exact_matmul(pc, ch * m, bound).float() * (sp * sh).float()
                + exact_matmul(pc, cl * (1 - m), bound).float() * (sp * sl).float())
    vc, sv = v_site.centered(value, vmask)
    if sv.numel() == 1:
        return exact_matmul(pc, vc, bound).float() * (sp * sv).float()
    return (pc @ (vc * sv)) * sp


def squat_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention with fake-quantized q, k (after rotary), v and probabilities.

    query ``(B, H, T, D)``; key, value ``(B, Hkv, S, D)`` with S >= T (KV cache); returns ``(B, T, H, D)``.

    Training runs float matmuls of the fake-quantized tensors (fast, differentiable). Evaluation (and the integer
    reference, which reads the exported sites) runs ``q @ k^T`` and ``probs @ v`` as exact integer matmuls with
    one rescale each, and the softmax in float64: the result is then the integer kernels' arithmetic and does not
    depend on the shapes of the call, so a token scores the same with the KV cache, without it, alone or in a
    padded batch (a float matmul's rounding depends on the shapes, and one flipped rounding of a quantized value
    moved logits by 1e-3).
    """
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    aq: AttentionQuantizers | None = getattr(module, "attn_quant", None)
    if aq is None:
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        probs_d = nn.functional.dropout(probs, p=dropout, training=module.training)
        return torch.matmul(probs_d, value).transpose(1, 2).contiguous(), probs

    state = aq.state
    exact = aq.integer is not None or not aq.training
    sites = aq.integer or {k: getattr(aq, k) for k in ("q", "k", "v", "probs")}
    qmask = state.input_mask(aq.layer) if state else None
    kmask = state.key_mask(aq.layer) if state else None
    q_hat = k_hat = None  # fake-quantized q and k, when the float path made them
    if exact and _is_int(sites["q"]) and _is_int(sites["k"]):
        scores = _integer_scores(sites["q"], sites["k"], query, key, qmask, kmask) * scaling
    else:
        q_hat, k_hat = _quant(aq.q, query, qmask), _quant(aq.k, key, kmask)
        scores = torch.matmul(q_hat, k_hat.transpose(2, 3)) * scaling  # (B, H, T, S)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float64 if exact else torch.float32).to(query.dtype)

    if state is not None:
        state.update(aq.layer, probs, scores, threshold=aq.token_threshold, training=aq.training)
    vmask = state.value_mask(aq.layer) if state else None
    rec = aq.record
    if rec.keep_qk:  # the entropy loss reads the fake-quantized q and k
        rec.q[aq.layer] = q_hat if q_hat is not None else _quant(aq.q, query, qmask)
        rec.k[aq.layer] = k_hat if k_hat is not None else _quant(aq.k, key, kmask)
    if exact and _is_int(sites["probs"]) and _is_int(sites["v"]):
        if rec.keep_maps:
            rec.maps[aq.layer] = aq.probs(probs)
        out = _integer_pv(sites["probs"], sites["v"], probs, value, vmask).to(query.dtype)
        return out.transpose(1, 2).contiguous(), probs
    value = _quant(aq.v, value, vmask)
    probs = aq.probs(probs)
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
