"""Where (linears): a quantized linear swapped in place of ``nn.Linear`` or GPT-2's ``Conv1D``.

It owns its weight quantizer and points at its input-activation quantizer (shared by the projections that
read the same tensor, e.g. q/k/v, so they see one quantized input as the integer kernel does). With both
quantizers off it runs the exact float ops of the module it replaced, so outputs stay bit-identical. Training
multiplies the fake-quantized tensors in float (differentiable); evaluation multiplies their integers exactly.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from squat.quant.quantizers import exact_matmul


class QuantLinear(nn.Module):
    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, conv1d: bool, weight_quant: nn.Module, act_quant: nn.Module):
        super().__init__()
        # Same Parameter objects as the replaced module: no copy, and optimiser/state_dict names stay HF's.
        self.weight = weight
        self.bias = bias
        self.conv1d = conv1d  # GPT-2 Conv1D stores [in, out] and computes addmm
        self.weight_quant = weight_quant
        self.act_quant = act_quant

    @classmethod
    def from_module(cls, mod: nn.Module, weight_quant: nn.Module, act_quant: nn.Module) -> "QuantLinear":
        if isinstance(mod, Conv1D):
            return cls(mod.weight, mod.bias, True, weight_quant, act_quant)
        if isinstance(mod, nn.Linear):
            return cls(mod.weight, mod.bias, False, weight_quant, act_quant)
        raise TypeError(f"cannot quantize {type(mod).__name__}: expected nn.Linear or transformers Conv1D")

    @property
    def in_features(self) -> int:
        return self.weight.shape[0] if self.conv1d else self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1] if self.conv1d else self.weight.shape[0]

    def weight_nk(self) -> torch.Tensor:
        """The float weight as ``[out, in]`` (the layout quantizers and the kernel use)."""
        return self.weight.t() if self.conv1d else self.weight

    def quantized_weight_nk(self) -> torch.Tensor:
        w = self.weight_nk()
        return w if isinstance(self.weight_quant, nn.Identity) else self.weight_quant(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and not isinstance(self.weight_quant, nn.Identity):
            return self._exact(x)
        x = self.act_quant(x)
        if self.conv1d:
            w = self.weight if isinstance(self.weight_quant, nn.Identity) else self.quantized_weight_nk().t()
            out = torch.addmm(self.bias, x.view(-1, x.size(-1)), w)
            return out.view(*x.shape[:-1], w.shape[1])
        return F.linear(x, self.quantized_weight_nk(), self.bias)

    @torch.no_grad()
    def _exact(self, x: torch.Tensor) -> torch.Tensor:
        """Eval: the integer kernel's arithmetic, ``fp32(c_x @ q_w^T) * fp32(s_x * s_w) (+ b)``: one exact integer
        matmul, then three float32 roundings in the kernel epilogue's order (no fma), so the integer runtime gives
        the same bits. Unlike a float matmul of the dequantized tensors, the result does not depend on the call's
        shapes (cached decoding, padding, batch size). A float input (o_proj_input=false) is summed in float64 and
        rounded once: order-independent here, though the runtime's fp32 GEMM sums it in its own order."""
        wc, sw = self.weight_quant.centered(self.weight_nk())
        if isinstance(self.act_quant, nn.Identity):
            y = exact_matmul(x.double(), wc.t(), 2**30) * sw.reshape(1, -1)
            if self.bias is not None:
                y = y + self.bias.double()
            return y.to(x.dtype)
        mask = self.act_quant.mask() if hasattr(self.act_quant, "mask") else None
        xc, sx = self.act_quant.centered(x, mask)
        acc = exact_matmul(xc, wc.t(), self.in_features * self.act_quant.span * 2 ** (self.weight_quant.bits - 1))
        y = acc.float() * (sx.float() * sw.float().reshape(1, -1))
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def to_float(self) -> nn.Module:
        """Back to a plain module (sharing the same Parameters), with the quantizers dropped."""
        if self.conv1d:
            mod = Conv1D(self.out_features, self.in_features)
        else:
            mod = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        mod.weight, mod.bias = self.weight, self.bias
        return mod

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, conv1d={self.conv1d}"
