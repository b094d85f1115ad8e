"""Token-adaptive mixed precision (paper section 5): which tokens keep 8-bit activations.

Pure tensor functions; the model's attention calls them. Conventions:

* ``high`` masks are bool ``[B, T]``, True = 8-bit (important) token, False = 4-bit token.
* ``valid_mask`` / ``key_mask`` are bool, True = real token, False = padding. Padding is never
  counted towards a ratio and is always returned False (it has no precision to choose).
* ``ratio`` is the fraction of valid tokens kept at 8 bits (paper's rho; 4-bit:8-bit 1:1 -> 0.5,
  1:3 -> 0.75, 3:1 -> 0.25).
"""

from __future__ import annotations


import torch
import torch.nn as nn

from squat.quant.quantizers import NIPQQuantizer, fake_quant

Tensor = torch.Tensor

__all__ = [
    "token_importance",
    "select_high_precision",
    "select_high_precision_incremental",
    "threshold_for_ratio",
    "select_by_threshold",
    "realised_low_fraction",
    "TokenPrecisionState",
    "TokenAdaptiveQuantizer",
]


def _check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")


def _count(ratio: float, n_valid: Tensor) -> Tensor:
    """Number of 8-bit tokens, ``round(ratio * n_valid)``; ties round half to even like Python's round."""
    return torch.round(ratio * n_valid.to(torch.float64)).to(torch.long)


def token_importance(attn: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Importance of each query token = its attention to the first key, averaged over heads.

    The first token is the attention sink; tokens that lean on it are the ones quantization damages
    most, so they get 8 bits.

    Args:
        attn: ``[B, H, T, S]``. Pass the softmax probabilities (default, paper) or the pre-softmax
            scores (public code's variant); the same column is read from either, so which tensor
            is passed *is* the choice. The queries are the last T of S positions (KV cache).
        key_mask: optional ``[B, S]`` bool, True = real key. With left padding the sink is the
            first *real* key, not column 0; without a mask column 0 is used.

    Returns:
        ``[B, T]`` float32 importance.
    """
    if key_mask is None:
        col = attn[..., 0]  # [B, H, T]
    else:
        first = key_mask.to(torch.int8).argmax(dim=-1)  # first True; 0 if a row has none
        idx = first.view(-1, 1, 1, 1).expand(attn.shape[0], attn.shape[1], attn.shape[2], 1)
        col = attn.gather(-1, idx).squeeze(-1)
    return col.float().mean(dim=1)


def _top_k_mask(importance: Tensor, valid: Tensor, k: Tensor) -> Tensor:
    """Per row, True on the k highest-importance valid positions; ties go to the lower index."""
    # Two stable sorts give the order (valid first, then importance descending, then index
    # ascending) even when a valid score equals the value padding might hold (e.g. -inf logits).
    order = importance.sort(dim=-1, descending=True, stable=True).indices
    v_sorted = valid.gather(-1, order)
    order = order.gather(-1, v_sorted.to(torch.int8).sort(dim=-1, descending=True, stable=True).indices)
    rank_ok = torch.arange(importance.shape[-1], device=importance.device) < k.unsqueeze(-1)
    return torch.zeros_like(valid).scatter(-1, order, rank_ok)


def select_high_precision(
    importance: Tensor,
    ratio: float,
    per_sample: bool = True,
    valid_mask: Tensor | None = None,
) -> Tensor:
    """Choose the 8-bit tokens: the ``round(ratio * n_valid)`` most important valid tokens.

    Args:
        importance: ``[B, T]`` from ``token_importance``.
        ratio: fraction of valid tokens kept at 8 bits; 0 -> none, 1 -> all valid tokens.
        per_sample: True (default): each sample picks its own tokens, exactly
            ``round(ratio * n_valid[b])`` of them. False (public code's variant): one index set for
            the whole batch, chosen from the batch-mean importance (mean over the samples in which the
            position is valid), among positions valid in any sample; it is then ANDed with
            ``valid_mask``, so a padded sample can get fewer than its share.
        valid_mask: optional ``[B, T]`` bool, True = real token.

    Returns:
        ``[B, T]`` bool, True = 8-bit. Ties in importance are broken by lower position index, so the
        result is deterministic.
    """
    _check_ratio(ratio)
    valid = torch.ones_like(importance, dtype=torch.bool) if valid_mask is None else valid_mask.bool()
    imp = importance.float()
    if per_sample:
        return _top_k_mask(imp, valid, _count(ratio, valid.sum(-1)))
    w = valid.to(imp.dtype)
    shared_imp = (imp * w).sum(0, keepdim=True) / w.sum(0, keepdim=True).clamp_min(1.0)  # [1, T]
    shared_valid = valid.any(0, keepdim=True)
    shared = _top_k_mask(shared_imp, shared_valid, _count(ratio, shared_valid.sum(-1)))
    return shared & valid


def select_high_precision_incremental(
    past_scores: Tensor,
    new_score: Tensor,
    ratio: float,
    past_valid: Tensor | None = None,
) -> Tensor:
    """Precision of one newly decoded token, so that decoding follows the same rule as training.

    Rule: the new token is 8-bit iff it would be selected if ``select_high_precision`` (per sample)
    were re-run now on the whole sequence, i.e. iff fewer than ``k = round(ratio * n)`` earlier
    scores are >= its score, with ``n`` = valid past tokens + 1. (It is the last index, so it loses
    ties, as in the batch rule.) This is the rank form of "score >= the (1 - ratio) quantile of all
    scores so far including itself", but it is exact at the ends: ratio 0 never selects, ratio 1
    always does. Earlier tokens keep the precision they were given (their cached K/V are already
    quantized). If scores are exchangeable, the new token's rank is uniform, so each step is 8-bit
    with probability ``k / n ~ ratio`` and the realised fraction tracks ``ratio``; a strong trend in
    the scores over the sequence biases it.

    Args:
        past_scores: ``[B, S_past]`` importance of the tokens so far (S_past may be 0).
        new_score: ``[B, 1]`` importance of the new token.
        ratio: target fraction of 8-bit tokens.
        past_valid: optional ``[B, S_past]`` bool, True = real token (left padding is ignored).

    Returns:
        ``[B, 1]`` bool, True = 8-bit.
    """
    _check_ratio(ratio)
    ge = past_scores.float() >= new_score.float()  # [B, S_past]
    n_past = past_scores.new_full((past_scores.shape[0],), past_scores.shape[1], dtype=torch.long)
    if past_valid is not None:
        ge = ge & past_valid.bool()
        n_past = past_valid.sum(-1)
    k = _count(ratio, n_past + 1)
    return (ge.sum(-1) < k).unsqueeze(-1)


def realised_low_fraction(high_mask: Tensor, valid_mask: Tensor | None = None) -> Tensor:
    """Fraction of valid tokens that ran at 4 bits (scalar float32; 0 if there is no valid token).

    Logged to check that the achieved precision mix is the configured one (e.g. with the batch-shared
    variant and padding, or in decoding).
    """
    high = high_mask.bool()
    if valid_mask is None:
        valid = torch.ones_like(high)
    else:
        valid = valid_mask.bool()
    n = valid.sum()
    low = (valid & ~high).sum()
    return low.float() / n.clamp_min(1).float()


def threshold_for_ratio(importance: Tensor, ratio: float, valid_mask: Tensor | None = None) -> Tensor:
    """The importance threshold at which ``round(ratio * n)`` of the ``n`` valid tokens score at least it (the
    k-th largest valid score; ``+inf`` if k = 0). Scalar float32."""
    _check_ratio(ratio)
    imp = importance.float()
    vals = imp[valid_mask.bool()] if valid_mask is not None else imp.flatten()
    k = int(_count(ratio, torch.tensor(vals.numel())))
    if k == 0:
        return imp.new_tensor(float("inf"))
    return vals.kthvalue(vals.numel() - k + 1).values


_TINY = torch.finfo(torch.float32).tiny  # importance can underflow to 0; its log must stay finite


def track_threshold(threshold: Tensor, batch_log: Tensor, momentum: float) -> Tensor:
    """One training step of the threshold's moving average, taken on the log scale.

    Attention to the first token spans many orders of magnitude (a trained 4-layer student's layer-3 quantiles
    move between 1e-23 and 1e-18 from batch to batch) and can fall by as many during QAT. A linear average is
    pulled up by the largest batches and can shrink by only ``momentum`` per step, so the realised 8-bit share fell
    to 0.27 at ratio 0.5 after 200 steps; averaging ``log`` thresholds (a geometric mean) tracks the batches'
    median quantile and follows a collapse at the same rate as a rise."""
    old = threshold.float().clamp_min(_TINY).log()
    return old.lerp(batch_log.float(), momentum).exp().to(threshold.dtype)


def select_by_threshold(importance: Tensor, threshold: Tensor, ratio: float, valid_mask: Tensor | None = None) -> Tensor:
    """The causal rule: a token is 8-bit iff its own importance reaches the layer's calibrated threshold.

    A token's importance is its attention to the first token, which under causal attention depends only on the
    tokens up to it, so its precision never depends on later tokens, on the batch or on padding: training,
    evaluation and cached decoding decide every token identically. ratio 0 selects nothing and ratio 1 every
    valid token, whatever the threshold.
    """
    _check_ratio(ratio)
    if ratio == 0.0:
        high = torch.zeros_like(importance, dtype=torch.bool)
    elif ratio == 1.0:
        high = torch.ones_like(importance, dtype=torch.bool)
    else:
        high = importance.float() >= threshold.to(importance.device).float()
    return high if valid_mask is None else high & valid_mask.bool()


class TokenPrecisionState:
    """Which tokens each layer keeps at high precision, and how that propagates (paper section 5).

    Layer ``l`` chooses its 8-bit tokens from its attention to the first token. That choice sets the precision
    of layer ``l``'s v and MLP activations and of layer ``l+1``'s attention input, q and k; layer 0's input, q and
    k are all high precision. The state keeps each layer's choices for the whole sequence so that, while
    decoding with a KV cache, past keys and values (re-quantized each step from the float cache) keep the
    precision they were given.

    Two rules (``rule``):

    * ``"threshold"`` (default, causal): token i is 8-bit iff its importance reaches the layer's threshold, a
      buffer calibrated on the first forward so that ``ratio`` of the tokens reach it, then tracked during
      training as an exponential moving average (``momentum``) of each batch's ratio-quantile and frozen in
      eval, like batch norm's running statistics. Cached decoding equals recomputation.
    * ``"topk"`` (the paper's): exactly ``round(ratio * n)`` tokens per sequence (or per batch), chosen over the
      whole sequence, so later tokens decide an earlier token's precision: not causal. Decoding then judges
      each new token against the scores seen so far (:func:`select_high_precision_incremental`), which
      recomputing the sequence does not reproduce.

    Padding: :meth:`begin` receives the forward's 2-D attention mask (True = real token). Padding never counts
    towards a ratio or a threshold and always gets low precision; the first real key is the sink.
    """

    def __init__(self, ratio: float, rule: str = "threshold", per_sample: bool = True, score: str = "probs",
                 momentum: float = 0.05):
        _check_ratio(ratio)
        if score not in ("probs", "logits"):
            raise ValueError(f"score must be 'probs' or 'logits', got {score!r}")
        if rule not in ("threshold", "topk"):
            raise ValueError(f"rule must be 'threshold' or 'topk', got {rule!r}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must lie in (0, 1], got {momentum!r}")
        self.ratio, self.rule, self.per_sample, self.score, self.momentum = ratio, rule, per_sample, score, momentum
        self.valid: Tensor | None = None  # [B, S] real-token mask of the current forward (None: all real)
        self.high: dict[int, Tensor] = {}  # layer -> [B, S] choices over the whole sequence so far
        self.scores: dict[int, Tensor] = {}  # layer -> [B, S] importance history (topk decoding)
        self.new: dict[int, int] = {}  # layer -> number of positions added by the current forward

    def begin(self, attention_mask: Tensor | None) -> None:
        """Called before every forward of the model with its 2-D attention mask ([B, S], 1 = real token)."""
        self.valid = None if attention_mask is None or attention_mask.dim() != 2 else attention_mask.bool()

    def _valid(self, s: int) -> Tensor | None:
        return self.valid if self.valid is not None and self.valid.shape[-1] == s else None

    def update(self, layer: int, probs: Tensor, logits: Tensor, threshold: Tensor | None = None,
               training: bool = False) -> Tensor:
        """Choose layer ``layer``'s high-precision tokens among the ``T`` queries of this forward.

        ``threshold``: the layer's ``[1]`` buffer (rule "threshold"; NaN until calibrated, filled in place).
        """
        attn = probs if self.score == "probs" else logits
        t, s = attn.shape[-2], attn.shape[-1]
        key_valid = self._valid(s)
        q_valid = key_valid[:, -t:] if key_valid is not None else None
        imp = token_importance(attn.detach(), key_valid)  # [B, T]
        new_sequence = t == s or layer not in self.high
        if self.rule == "threshold":
            high = self._threshold_select(imp, q_valid, threshold, training)
        elif new_sequence:
            high = select_high_precision(imp, self.ratio, per_sample=self.per_sample, valid_mask=q_valid)
        else:
            high = self._incremental(layer, imp, key_valid)
        if new_sequence:
            self.high[layer], self.scores[layer] = high, imp
        else:
            self.high[layer] = torch.cat([self.high[layer], high], dim=1)
            self.scores[layer] = torch.cat([self.scores[layer], imp], dim=1)
        self.new[layer] = t
        return high

    def _threshold_select(self, imp: Tensor, valid: Tensor | None, threshold: Tensor | None, training: bool) -> Tensor:
        if threshold is None:
            raise ValueError("rule='threshold' needs the layer's threshold buffer")
        if 0.0 < self.ratio < 1.0:
            with torch.no_grad():
                if torch.isnan(threshold).any():
                    threshold.copy_(_synced(threshold_for_ratio(imp, self.ratio, valid)).reshape(threshold.shape))
                    return select_by_threshold(imp, threshold, self.ratio, valid)
                high = select_by_threshold(imp, threshold, self.ratio, valid)
                if training:
                    batch = threshold_for_ratio(imp, self.ratio, valid).clamp_min(_TINY).log()
                    batch = _synced(batch).reshape(threshold.shape)  # DDP: the ranks' geometric mean
                    if torch.isfinite(batch).all():
                        threshold.copy_(track_threshold(threshold, batch, self.momentum))
                return high
        return select_by_threshold(imp, imp.new_zeros(()), self.ratio, valid)

    def _incremental(self, layer: int, imp: Tensor, key_valid: Tensor | None) -> Tensor:
        parts, scores = [], self.scores[layer]
        n_past = scores.shape[1]
        for i in range(imp.shape[1]):
            past_valid = key_valid[:, : n_past + i] if key_valid is not None else None
            parts.append(select_high_precision_incremental(scores, imp[:, i : i + 1], self.ratio, past_valid))
            scores = torch.cat([scores, imp[:, i : i + 1]], dim=1)
        high = torch.cat(parts, dim=1)
        return high if key_valid is None else high & key_valid[:, -imp.shape[1]:]

    def _of(self, layer: int, whole: bool) -> Tensor | None:
        if layer < 0:
            return None  # before layer 0: everything at high precision
        h = self.high[layer]
        return h if whole else h[:, -self.new[layer] :]

    def input_mask(self, layer: int) -> Tensor | None:
        """``[B, T]`` for layer ``layer``'s attention input and q (chosen by the previous layer)."""
        return self._of(layer - 1, whole=False)

    def key_mask(self, layer: int) -> Tensor | None:
        """``[B, S]`` for layer ``layer``'s keys, over the whole cached sequence."""
        return self._of(layer - 1, whole=True)

    def value_mask(self, layer: int) -> Tensor:
        """``[B, S]`` for layer ``layer``'s values (its own choice)."""
        return self._of(layer, whole=True)

    def output_mask(self, layer: int) -> Tensor:
        """``[B, T]`` for layer ``layer``'s o_proj/MLP activations (its own choice)."""
        return self._of(layer, whole=False)

    def high_fractions(self, whole: bool = False) -> dict[int, float]:
        """Per layer, the realised share of valid tokens at high precision (last forward, or whole sequence)."""
        out = {}
        for layer in sorted(self.high):
            h = self._of(layer, whole)
            valid = self._valid(self.high[layer].shape[1])
            if valid is not None and not whole:
                valid = valid[:, -h.shape[1]:]
            out[layer] = 1.0 - float(realised_low_fraction(h, valid))
        return out

    def low_fraction(self) -> Tensor | None:
        """Realised fraction of low-precision tokens in the last forward, over layers (padding excluded)."""
        if not self.high:
            return None
        return torch.tensor(1.0 - sum(self.high_fractions().values()) / len(self.high))


def _synced(x: Tensor) -> Tensor:
    """Average a statistic over data-parallel processes so every replica keeps the same threshold."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        x = x.clone()
        torch.distributed.all_reduce(x)
        x = x / torch.distributed.get_world_size()
    return x


class TokenAdaptiveQuantizer(nn.Module):
    """Two quantizers for one site: ``high`` for the chosen tokens, ``low`` for the rest.

    Inside attention the caller passes the mask; at a linear's input it is read from the shared state
    (``which`` = "input": chosen by the previous layer; "output": chosen by this layer).
    """

    def __init__(self, low: nn.Module, high: nn.Module, state: TokenPrecisionState, layer: int, which: str):
        super().__init__()
        if which not in ("input", "output"):
            raise ValueError(f"which must be 'input' or 'output', got {which!r}")
        self.low, self.high = low, high
        self.layer, self.which = layer, which
        object.__setattr__(self, "state", state)  # shared plain object, not a submodule

    def mask(self) -> Tensor | None:
        """The current forward's ``[B, T]`` precisions for this site (None: all high precision)."""
        return self.state.input_mask(self.layer) if self.which == "input" else self.state.output_mask(self.layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.quantize(x, self.mask())

    @property
    def dynamic(self) -> bool:
        return self.low.dynamic or self.high.dynamic

    @property
    def span(self) -> int:
        return max(self.low.span, self.high.span)

    def centered(self, x: Tensor, high: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(q - z, s)`` as float64 for the whole input, each token with its own precision's quantizer."""
        ch, sh = self.high.centered(x)
        if high is None:
            return ch, sh
        cl, sl = self.low.centered(x)
        m = self._token_mask(high, x)
        return torch.where(m, ch, cl), torch.where(m, sh, sl)

    def quantize(self, x: Tensor, high: Tensor | None) -> Tensor:
        """``high``: ``[B, T]`` bool over x's token axis (dim -2), or None for all high precision.

        Each token is rounded once, on its own precision's grid (step, zero point and range picked per token):
        the same values as quantizing the whole tensor twice and selecting, at half the elementwise work."""
        if high is None:
            return self.high(x)
        self.high._maybe_init(x)
        self.low._maybe_init(x)
        if isinstance(self.low, NIPQQuantizer) and self.low.training and not self.low.hard:  # noise, not a grid
            return torch.where(self._token_mask(high, x), self.high(x), self.low(x))
        m = self._token_mask(high, x)
        (xh, sh, zh, loh, hih), (xl, sl, zl, lol, hil) = self.high._grid(x), self.low._grid(x)
        xc = xh if xh is xl else torch.where(m, xh, xl)  # learned clips (PACT) differ per precision
        z = zh if not torch.is_tensor(zh) and not torch.is_tensor(zl) and zh == zl else torch.where(m, zh, zl)
        grid = (torch.where(m, sh, sl), z, torch.where(m, float(loh), float(lol)),
                torch.where(m, float(hih), float(hil)))
        return fake_quant(xc, *grid).to(x.dtype)

    @staticmethod
    def _token_mask(high: Tensor, x: Tensor) -> Tensor:
        return high.view(*high.shape[:1], *([1] * (x.dim() - 3)), high.shape[1], 1)

    def extra_repr(self) -> str:
        return f"layer={self.layer}, mask={self.which}"
