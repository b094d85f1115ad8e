"""What to quantize: bit widths, granularity and sites, validated on creation.

Plain dataclasses with no behaviour, used as Hydra structured configs (``conf/quant/*.yaml``) so a typo
or an unsupported bit width fails at compose time or in ``__post_init__``, before any training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from omegaconf import OmegaConf

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8)


class Choice(str, Enum):
    """A config choice: validated by OmegaConf at compose time, prints as its value (run dirs, wandb names)."""

    def __str__(self) -> str:
        return self.value


class Granularity(Choice):
    per_tensor = "per_tensor"
    per_channel = "per_channel"


class TokenSelect(Choice):
    per_sample = "per_sample"  # default: each sequence picks its own top tokens
    batch = "batch"  # public code: one index set shared across the batch


class TokenScore(Choice):
    probs = "probs"  # default: softmax attention to the first token
    logits = "logits"  # public code: pre-softmax scores


class TokenRule(Choice):
    threshold = "threshold"  # default, causal: importance >= the layer's calibrated threshold
    topk = "topk"  # paper: the top ratio of the whole sequence (not causal; decoding differs from training)


def _check_bits(name: str, bits: Optional[int]) -> None:
    if bits is not None and bits not in ALLOWED_BITS:
        raise ValueError(
            f"quant.{name}={bits} is not supported: use one of {list(ALLOWED_BITS)} or null (off)"
        )


def quant_name(weight_bits: Optional[int], act_bits: Optional[int], probs_bits: Optional[int],
               token_ratio: Optional[float] = None, high_bits: int = 8) -> str:
    """The name a setting is known by, derived from the bits actually used so an override renames the run:
    ``fp``; ``w4a4`` (``f`` = float); token-adaptive ``w4a4_8`` at ratio 0.5, else ``w4a4_8_r25``; probabilities
    other than 8-bit (the default whenever activations are quantized) add ``_p<bits>``."""
    if weight_bits is None and act_bits is None and probs_bits is None:
        return "fp"
    name = f"w{weight_bits or 'f'}a{act_bits or 'f'}"
    if token_ratio is not None:
        name += f"_{high_bits}" + ("" if token_ratio == 0.5 else f"_r{round(token_ratio * 100)}")
    if probs_bits != (8 if act_bits is not None else None):
        name += f"_p{probs_bits or 'f'}"
    return name


def _name_of(q) -> str:
    tp = q.token_policy
    return quant_name(q.weight_bits, q.act_bits, q.probs_bits, tp.ratio if tp.enabled else None, tp.high_bits)


# Resolver for ``quant.name`` at compose time (run folders and wandb names use it before any dataclass exists).
QUANT_NAME_RESOLVER = "squat_quant_name"


def _resolve_name(*, _parent_) -> str:
    return _name_of(_parent_)


OmegaConf.register_new_resolver(QUANT_NAME_RESOLVER, _resolve_name, replace=True)
NAME_INTERPOLATION = "${" + QUANT_NAME_RESOLVER + ":}"


@dataclass
class TokenPolicyConfig:
    """Token-adaptive activations: a share ``ratio`` of tokens, by attention-sink importance, get
    ``high_bits``, the rest ``quant.act_bits`` (paper section 5). ``rule=threshold`` (default) decides each token
    from its own importance against a per-layer threshold calibrated to ``ratio`` (causal, identical in training,
    evaluation and cached decoding); ``rule=topk`` is the paper's whole-sequence top-k (not causal)."""

    enabled: bool = False
    ratio: float = 0.5
    high_bits: int = 8
    rule: TokenRule = TokenRule.threshold
    momentum: float = 0.05  # threshold rule: EMA weight of each training batch's ratio-quantile
    select: TokenSelect = TokenSelect.per_sample  # topk rule only
    score: TokenScore = TokenScore.probs

    def __post_init__(self) -> None:
        self.select, self.score = TokenSelect(self.select), TokenScore(self.score)  # plain strings from Python
        self.rule = TokenRule(self.rule)
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"quant.token_policy.ratio={self.ratio} must lie in [0, 1]")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"quant.token_policy.momentum={self.momentum} must lie in (0, 1]")
        if self.rule == TokenRule.threshold and self.select == TokenSelect.batch:
            raise ValueError(
                "quant.token_policy.select=batch applies to the paper's top-k only: add quant.token_policy.rule=topk"
            )
        _check_bits("token_policy.high_bits", self.high_bits)


@dataclass
class SitesConfig:
    """Which activation sites are quantized (paper section 3; LLaMA names, GPT-2 mapped alike)."""

    attn_input: bool = True  # input of q/k/v projections (GPT-2: c_attn)
    q: bool = True  # after rotary embedding
    k: bool = True
    v: bool = True
    probs: bool = True  # softmax probabilities, always unsigned
    # The public code leaves it float; quantized, every block linear is integer and the integer runtime reproduces
    # the fake-quant student's bits (a float o_proj's fp32 sums differ in order on the two sides, and a last-bit
    # difference can flip a later activation code that the KV cache then keeps: docs/kernels.md).
    o_proj_input: bool = True
    mlp_input: bool = True  # input of gate/up (GPT-2: c_fc)
    mlp_down_input: bool = True  # act(gate) * up before down_proj (GPT-2: mlp.c_proj input)
    lm_head: bool = False  # weight and input of the output projection


@dataclass
class QuantConfig:
    """Bit widths per site class; ``null`` turns a class off (that site stays float). In a composed run ``name`` is
    derived from the bits (:func:`quant_name`), so ``quant=w4a4 quant.weight_bits=3`` runs as ``w3a4``."""

    name: str = NAME_INTERPOLATION
    weight_bits: Optional[int] = None
    act_bits: Optional[int] = None
    probs_bits: Optional[int] = None
    weight_granularity: Granularity = Granularity.per_tensor
    sites: SitesConfig = field(default_factory=SitesConfig)
    token_policy: TokenPolicyConfig = field(default_factory=TokenPolicyConfig)

    def __post_init__(self) -> None:
        self.weight_granularity = Granularity(self.weight_granularity)
        for name in ("weight_bits", "act_bits", "probs_bits"):
            _check_bits(name, getattr(self, name))
        if self.token_policy.enabled and self.act_bits is None:
            raise ValueError("quant.token_policy.enabled needs quant.act_bits (the low precision), e.g. 4")
        if self.name.startswith("${"):  # built in Python without a name: named by its bits
            self.name = _name_of(self)

    def check_name(self) -> None:
        """Composed runs are named by their bits (a hand-set quant.name would mislabel them); in Python any label."""
        derived = _name_of(self)
        if self.name != derived:
            raise ValueError(f"quant.name={self.name!r} does not match the bits set, which make {derived!r}: the name "
                             "follows quant.weight_bits / act_bits / probs_bits / token_policy; drop quant.name")

    @classmethod
    def schema(cls) -> "QuantConfig":
        """The structured-config default: ``name`` stays an interpolation, resolved from the composed bits."""
        q = cls()
        q.name = NAME_INTERPOLATION
        return q

    @property
    def is_float(self) -> bool:
        return self.weight_bits is None and self.act_bits is None and self.probs_bits is None

    @property
    def effective_act_bits(self) -> Optional[float]:
        """Average activation bits per token, the x axis of the token-ratio ablation."""
        if self.act_bits is None:
            return None
        if not self.token_policy.enabled:
            return float(self.act_bits)
        r = self.token_policy.ratio
        return r * self.token_policy.high_bits + (1 - r) * self.act_bits
