"""Where (float ops): the norms and MLP activations of a quantized model, in eval, in the arithmetic the integer
runtime repeats bit for bit.

A quantized student's activation codes are rounded from float values, so a float op that torch and the C runtime
compute with a different summation order or ``exp`` moves a code across a rounding boundary now and then; a key
code then stays wrong in the KV cache for every later token (measured on BabyLM students: docs/kernels.md). Here
the reductions and transcendental functions run in float64 and round once to float32, which makes the float32
result independent of the order and of the ``exp`` implementation (short of a tie, about 1e-8 per value);
elementwise float32 products stay as Hugging Face writes them. Forward hooks replace the eval output of the
HF modules in place (names, Parameters and training untouched: in training the hook returns nothing).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def _f32(v: float) -> float:
    """``v`` rounded to float32, as the runtime stores it (its config holds eps as float)."""
    return float(torch.tensor(v, dtype=torch.float32))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * fp32(x / sqrt(mean(x^2) + eps))``, statistics and scaling in float64."""
    x64 = x.double()
    r = 1.0 / torch.sqrt((x64 * x64).mean(-1, keepdim=True) + _f32(eps))
    return weight * (x64 * r).to(x.dtype)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``fp32((x - mean) / sqrt(var + eps)) * weight + bias`` (biased variance), statistics in float64."""
    x64 = x.double()
    mean = x64.mean(-1, keepdim=True)
    d = x64 - mean
    r = 1.0 / torch.sqrt((d * d).mean(-1, keepdim=True) + _f32(eps))
    return (d * r).to(x.dtype) * weight + bias


def silu(x: torch.Tensor) -> torch.Tensor:
    x64 = x.double()
    return (x64 / (1.0 + torch.exp(-x64))).to(x.dtype)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's ``gelu_new``, with ``tanh(y) = 1 - 2 / (exp(2y) + 1)``."""
    x64 = x.double()
    y = math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * (x64 * x64 * x64))
    return (0.5 * x64 * (2.0 - 2.0 / (torch.exp(2.0 * y) + 1.0))).to(x.dtype)


def _hook(fn):
    def hook(mod: nn.Module, args, out):
        return None if mod.training else fn(mod, args[0])
    return hook


_RMS = _hook(lambda m, x: rms_norm(x, m.weight, m.variance_epsilon))
_LN = _hook(lambda m, x: layer_norm(x, m.weight, m.bias, m.eps))
_SILU = _hook(lambda m, x: silu(x))
_GELU = _hook(lambda m, x: gelu_tanh(x))


def install(model: nn.Module, family: str) -> list:
    """Hook every block norm, the final norm and the MLP activation (when it is the one the runtime implements:
    LLaMA's silu, GPT-2's gelu_new; another stays HF's op); returns the hook handles."""
    if family == "llama":
        norms = [model.model.norm] + [n for b in model.model.layers for n in (b.input_layernorm, b.post_attention_layernorm)]
        mods = [(n, _RMS) for n in norms]
        if model.config.hidden_act == "silu":
            mods += [(b.mlp.act_fn, _SILU) for b in model.model.layers]
    else:
        norms = [model.transformer.ln_f] + [n for b in model.transformer.h for n in (b.ln_1, b.ln_2)]
        mods = [(n, _LN) for n in norms]
        if model.config.activation_function == "gelu_new":
            mods += [(b.mlp.act, _GELU) for b in model.transformer.h]
    return [m.register_forward_hook(h) for m, h in mods]
