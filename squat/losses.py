"""Training losses of Squat (paper sections 4): distillation, entropy and distribution losses.

All functions take plain tensors so they can be tested without a model. Per-layer quantities are
expected stacked along a leading layer axis ``L``; a list/tuple of per-layer tensors is also accepted
and stacked once (no Python loop over layers or heads inside the maths).

Reductions are done in float32 whatever the input dtype, so fp16/bf16 activations do not lose the
small differences these losses are made of.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Stacked = Union[Tensor, Sequence[Tensor]]

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "distillation_loss",
    "entropy_loss",
    "distribution_loss",
    "total_loss",
]


def _stack(x: Stacked) -> Tensor:
    """Per-layer lists come from forward hooks; stack them so every loss is one vectorised op."""
    return x if isinstance(x, Tensor) else torch.stack(tuple(x))


def _layers(x: Stacked) -> Sequence[Tensor]:
    """Per-layer tensors without a copy: attention maps are the largest tensors of a step, so they are not stacked."""
    return x.unbind(0) if isinstance(x, Tensor) else tuple(x)


# --------------------------------------------------------------------------------------------------
# Distillation
# --------------------------------------------------------------------------------------------------


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    gamma: float = 0.5,
    temperature: float = 2.0,
    direction: str = "forward",
) -> dict[str, Tensor]:
    """Knowledge-distillation loss ``(1 - gamma) * CE + gamma * T^2 * D``.

    Args:
        student_logits: ``[B, T, V]``.
        teacher_logits: ``[B, T, V]``; the caller averages an ensemble and detaches it.
        labels: ``[B, T]``, already shifted (position t predicts ``labels[t]``). Positions equal to
            ``IGNORE_INDEX`` (-100) are dropped from both CE and D, so padding never distils.
        gamma: weight of the distillation term; 0 gives pure cross-entropy.
        temperature: softens both distributions in D only (CE uses the raw student logits). The
            ``T^2`` factor keeps D's gradient scale independent of T (Hinton et al.).
        direction: ``"forward"``: D = KL(p_t || p_s) (paper; mass-covering).
            ``"reverse"``: D = KL(p_s || p_t) (mode-seeking).
            ``"jsd"``: symmetric Jensen-Shannon, 0.5 KL(p_t||m) + 0.5 KL(p_s||m), m = (p_t + p_s)/2.

    Returns:
        ``{"loss", "ce", "kl"}``: ``kl`` is the unscaled divergence D (whichever direction), all
        three are token means over the valid positions. With no valid position every term is 0.

    Everything is computed in float32 from ``log_softmax`` (never ``log(softmax)``), so large
    logits cannot produce ``log(0)``.
    """
    if direction not in ("forward", "reverse", "jsd"):
        raise ValueError(f"direction must be 'forward', 'reverse' or 'jsd', got {direction!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logit shapes differ: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(student_logits.shape)}")

    valid = labels != IGNORE_INDEX
    if bool(valid.all()):  # training chunks: no padding, so no boolean gather of the V-wide rows
        s, t, y = student_logits.flatten(0, -2).float(), teacher_logits.flatten(0, -2).float(), labels.flatten()
    else:  # select valid rows first: the V-wide softmaxes are only computed where they count
        s, t, y = student_logits[valid].float(), teacher_logits[valid].float(), labels[valid]  # [N, V]
    n = max(int(y.numel()), 1)  # a batch with no valid token yields zeros, not NaN

    ce = F.cross_entropy(s, y, reduction="sum") / n

    log_ps = F.log_softmax(s / temperature, dim=-1)
    log_pt = F.log_softmax(t / temperature, dim=-1)
    if direction == "forward":
        d = (log_pt.exp() * (log_pt - log_ps)).sum()
    elif direction == "reverse":
        d = (log_ps.exp() * (log_ps - log_pt)).sum()
    else:
        # log m = log((p_t + p_s) / 2), computed stably in log space.
        log_m = torch.logaddexp(log_pt, log_ps) - math.log(2.0)
        d = 0.5 * ((log_pt.exp() * (log_pt - log_m)).sum() + (log_ps.exp() * (log_ps - log_m)).sum())
    kl = d / n

    loss = (1.0 - gamma) * ce + gamma * temperature**2 * kl
    return {"loss": loss, "ce": ce, "kl": kl}


# --------------------------------------------------------------------------------------------------
# Entropy loss (paper Eq. 12)
# --------------------------------------------------------------------------------------------------


def _head_variance(x: Tensor, token_mask: Tensor | None) -> Tensor:
    """``[L, B, H, T, D] -> [L, H]``: variance over head_dim per token, then mean over (B, T).

    The order matters and follows the public code: the (biased) variance is taken across the D
    channels of each single token vector, and only then averaged over tokens and batch. It is *not*
    the variance of all B*T*D values of a head (that would also count the spread between tokens).
    """
    var = x.float().var(dim=-1, unbiased=False)  # [L, B, H, T]
    if token_mask is None:
        return var.mean(dim=(1, 3))
    w = token_mask.to(var.dtype)[None, :, None, :]  # [1, B, 1, T]
    return (var * w).sum(dim=(1, 3)) / w.sum().clamp_min(1.0)


def entropy_loss(q: Stacked, k: Stacked, form: str = "code", token_mask: Tensor | None = None) -> Tensor:
    """Entropy loss ``L_E`` that keeps the quantized queries/keys spread out.

    A Gaussian's entropy grows with log(variance), and a higher-entropy quantized Gaussian has lower
    quantization error, so the loss rewards variance. Minimising it raises the variances.

    Args:
        q, k: quantized student queries/keys (after RoPE), ``[L, B, H, T, D]`` or a per-layer list
            of ``[B, H, T, D]``.
        form: ``"code"`` (default): ``-log( sum_{l,h} log(1 + var_q) + sum_{l,h} log(1 + var_k) )``
            (public code; q and k may have different head counts). It rewards each variance on its
            own, so one of q/k cannot collapse while the other grows. ``"paper"``:
            ``-log( sum_{l,h} log(1 + var_q * var_k) )`` (Eq. 12; only the product is rewarded;
            q and k need the same head count).
        token_mask: optional ``[B, T]`` bool, True = real token; padding is left out of the mean.

    ``var_q``/``var_k`` are per (layer, head): see ``_head_variance`` for where the token mean happens.
    """
    q, k = _stack(q), _stack(k)
    var_q = _head_variance(q, token_mask)  # [L, H]
    var_k = _head_variance(k, token_mask)
    if form == "paper":
        s = torch.log1p(var_q * var_k).sum()
    elif form == "code":
        s = torch.log1p(var_q).sum() + torch.log1p(var_k).sum()
    else:
        raise ValueError(f"form must be 'paper' or 'code', got {form!r}")
    # s == 0 only if every q/k vector is constant; the floor keeps -log finite there (the gradient is
    # zero at that point anyway).
    return -torch.log(s.clamp_min(torch.finfo(s.dtype).tiny))


# --------------------------------------------------------------------------------------------------
# Distribution loss (paper Eq. 13)
# --------------------------------------------------------------------------------------------------


def _causal_keep(t: int, s: int, device: torch.device) -> Tensor:
    """``[T, S]`` bool, True where query i may see key j (queries are the last T of S positions)."""
    return torch.ones(t, s, dtype=torch.bool, device=device).tril(diagonal=s - t)


def distribution_loss(
    student_maps: Stacked,
    teacher_maps: Stacked,
    form: str = "corrected",
    causal: bool = True,
) -> Tensor:
    """Distribution loss ``L_D`` between student and teacher attention maps.

    Args:
        student_maps, teacher_maps: ``[L, B, H, T, S]`` (or a per-layer list of ``[B, H, T, S]``)
            softmax attention probabilities. The teacher is expected detached by the caller; nothing
            is detached here.
        form:
            ``"corrected"`` (default): ``1 - mean cos``, where cos is the cosine similarity of one
            query row of the student and teacher maps over the key axis, averaged over all
            (layer, batch, head, query) rows. Minimising it *raises* similarity, it lies in [0, 1]
            for probability maps, is 0 iff every row matches in direction, and is finite for any
            input. ``1 - mean cos`` was chosen over ``-log(mean cos)`` because it stays bounded when
            the maps share no support (cos = 0); near the optimum (cos ~ 1) both have the same
            gradient, since d(-log c) = -dc / c.
            ``"paper"``: the literal Eq. 13, ``log( sum_{l,h} mean_b cos(A_s, A_t) )`` with cos over
            the whole flattened T x S map of each (layer, batch, head). Its sign is wrong: minimising
            it *lowers* the similarity. Kept only to reproduce the paper.
        causal: zero the future keys (j > i + S - T) of both maps before comparing. Maps that come
            from a causally masked softmax are unchanged by this; it matters when the caller hands
            unmasked maps (as the public code does), whose future entries must not count.

    Rows that are all zero in either map (padding) have no direction: in the corrected form they are
    left out of the mean (a batch with no valid row gives 0); in the paper form they simply add
    nothing to the dot product. No division by zero happens in the forward or backward pass.
    """
    if form not in ("corrected", "paper"):
        raise ValueError(f"form must be 'corrected' or 'paper', got {form!r}")
    student, teacher = _layers(student_maps), _layers(teacher_maps)
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student layers vs {len(teacher)} teacher layers")
    total = valid_rows = 0
    for a, b in zip(student, teacher):  # one layer [B, H, T, S] at a time
        a, b = a.float(), b.float()
        if a.shape != b.shape:
            raise ValueError(f"map shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        if causal:
            keep = _causal_keep(a.shape[-2], a.shape[-1], a.device)
            a, b = a * keep, b * keep
        if form == "paper":
            a, b = a.flatten(-2), b.flatten(-2)  # cosine over the whole T x S map of each (batch, head)
        dot, na2, nb2 = (a * b).sum(-1), (a * a).sum(-1), (b * b).sum(-1)
        valid = (na2 > 0) & (nb2 > 0)
        # sqrt of a product that is 1 on invalid rows: no 0/0 and no sqrt'(0) in backward.
        denom = torch.sqrt(torch.where(valid, na2 * nb2, torch.ones_like(na2)))
        cos = torch.where(valid, dot / denom, torch.zeros_like(dot))
        if form == "corrected":  # mean of (1 - cos) over valid rows == 1 - mean cos; 0 without a valid row
            total = total + (valid.to(cos.dtype) - cos).sum()
            valid_rows = valid_rows + valid.sum()
        else:
            total = total + cos.mean(dim=0).sum()  # sum over heads of the batch-mean cosine
    if form == "corrected":
        return total / torch.as_tensor(valid_rows).clamp_min(1)
    return torch.log(total)


# --------------------------------------------------------------------------------------------------
# Total
# --------------------------------------------------------------------------------------------------


def total_loss(
    distill: dict[str, Tensor],
    entropy: Tensor | None = None,
    distribution: Tensor | None = None,
    r_entropy: float = 0.5,
    r_distribution: float = 1.0,
) -> dict[str, Tensor]:
    """``L = L_distill + rE * L_E + rD * L_D`` (paper: rE = 0.5, rD = 1), plus every term for logging.

    Args:
        distill: the dict returned by ``distillation_loss``.
        entropy, distribution: scalar losses, or None when that loss is switched off (then it is
            neither added nor logged, and need not be computed).

    Returns:
        ``{"loss", "distill", "ce", "kl"}`` plus ``"entropy"`` / ``"distribution"`` when given; the
        auxiliary entries are the *unweighted* terms. Only ``"loss"`` is meant for ``backward``.
    """
    out = {"distill": distill["loss"], "ce": distill["ce"], "kl": distill["kl"]}
    loss = distill["loss"]
    if entropy is not None:
        loss = loss + r_entropy * entropy
        out["entropy"] = entropy
    if distribution is not None:
        loss = loss + r_distribution * distribution
        out["distribution"] = distribution
    return {"loss": loss, **out}
