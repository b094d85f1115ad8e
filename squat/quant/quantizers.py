"""Fake quantizers for quantization-aware training (paper sections 2 and 8, plus the baselines).

Every quantizer maps a float tensor to its fake-quantized value ``x_hat = (q - z) * s`` with integer ``q``
and ``z``, and exposes the same decomposition through :meth:`Quantizer.int_repr` so that integer export
reproduces the training-time forward bit for bit (both go through ``_grid``).

Conventions shared by all quantizers:

- ``bits`` in 2..8; "no quantization" is ``nn.Identity`` chosen by the caller, never ``bits=None``.
- Learned state (step, zero point, clip) is initialised lazily from the first tensor the quantizer sees,
  in any mode (training, ``torch.no_grad`` or ``torch.inference_mode``), exactly once. A persistent
  buffer ``initialized`` records this so a reloaded checkpoint is not re-initialised.
- Activation signedness ``"auto"`` is decided on that same first tensor: the unsigned range
  ``[0, 2^b - 1]`` if its minimum is above ``-1e-5``, else a signed range. It is stored in the persistent
  buffer ``signed_code`` (-1 undecided, 0 unsigned, 1 signed).
- Arithmetic runs in ``promote(x.dtype, float32)`` (bf16 inputs are quantized in fp32) and the result is
  cast back to ``x.dtype``.

Because initialisation is data-driven, run one forward on a real batch before creating the optimizer,
wrapping in DDP, or comparing parameters across processes; per-channel LSQ steps without
``num_channels`` only get their shape then.
"""
from __future__ import annotations

import math

import torch
from torch import nn

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8)
ROLES = ("weight", "act")
METHODS = ("lsq", "squat", "pact", "nipq", "llmqat")

SIGN_THRESHOLD = -1e-5  # paper: unsigned if the first batch has no value below about -1e-5
EPS = 1e-8  # floor for steps and clips, so a zero tensor or a collapsing step never divides by zero


class _RoundSTE(torch.autograd.Function):
    """``torch.round`` forward, identity backward; exact, unlike ``x + (round(x) - x).detach()``."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _GradScale(torch.autograd.Function):
    """Identity forward, gradient times ``g`` backward.

    Same gradient as LSQ's ``(s - s*g).detach() + s*g``, but that sum can be off from ``s`` by an ulp;
    here the step used by ``forward`` is the parameter exactly, so exporting ``.scale`` is exact.
    """

    @staticmethod
    def forward(ctx, x, g):
        ctx.g = g
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.g, None


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest (half to even) with a straight-through gradient.

    The gradient passes everywhere; the quantizers follow it with ``torch.clamp`` to ``[qmin, qmax]``,
    whose gradient is zero outside the range, which gives the clipped-STE of paper section 2.
    """
    return _RoundSTE.apply(x)


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Return ``x`` unchanged with its gradient multiplied by ``g`` (LSQ step-size gradient scaling)."""
    return _GradScale.apply(x, g)


class _FakeQuant(torch.autograd.Function):
    """``x_hat = (clamp(round(x / s) + z, lo, hi) - z) * s`` in one node, with the gradients autograd would give the
    same expression with a straight-through round (LSQ/LSQ+): ``x`` inside the clip range; ``s``: ``round(x/s) - x/s``
    inside, ``q - z`` outside; ``z``: 0 inside, ``-s`` outside. The forward works in place on two fresh buffers and
    keeps only ``d x_hat / d s`` and the inside mask for the backward: on CPU the allocations and passes of six
    separate autograd ops (and twice that backward) cost more than the matmuls they feed."""

    @staticmethod
    def forward(ctx, x, s, z, lo, hi):
        t = x / s
        q = torch.round(t)
        has_z = torch.is_tensor(z) or z != 0
        if has_z:
            q.add_(z)
        inside = (q >= lo).logical_and_(q <= hi)
        q.clamp_(lo, hi)
        if has_z:
            q.sub_(z)
        ds = t.mul_(inside).neg_().add_(q)  # q - z - t inside, q - z outside
        ctx.save_for_backward(ds, inside, s)
        ctx.z_shape = z.shape if torch.is_tensor(z) else None
        return q.mul_(s)

    @staticmethod
    def backward(ctx, g):
        ds, inside, s = ctx.saved_tensors
        gx = g * inside
        gs = (g * ds).sum_to_size(s.shape) if ctx.needs_input_grad[1] else None
        gz = ((gx - g) * s).sum_to_size(ctx.z_shape) if ctx.z_shape is not None and ctx.needs_input_grad[2] else None
        return gx, gs, gz, None, None


def fake_quant(x: torch.Tensor, s: torch.Tensor, z, lo, hi) -> torch.Tensor:
    """``(clamp(round(x / s) + z, lo, hi) - z) * s`` with straight-through rounding, as one autograd node; equal bit
    for bit to the unfused expression. ``z``, ``lo``, ``hi`` are numbers or tensors broadcastable to ``x``."""
    return _FakeQuant.apply(x, s, z, lo, hi)


def exact_matmul(a: torch.Tensor, b: torch.Tensor, bound: float) -> torch.Tensor:
    """``a @ b`` of integer-valued tensors, exactly, as float64: in float32 when ``bound`` (a bound on the sum of
    ``|a_ik * b_kj|`` over k) is below 2^24, where every partial sum is an exact float32 integer and the matmul is
    faster, else in float64. A float ``a`` (an unquantized input) goes through float64: not exact, but its rounding
    no longer depends on the call's shapes once cast back to float32."""
    if bound < 2**24:
        return (a.float() @ b.float()).double()
    return a.double() @ b.double()


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in ALLOWED_BITS:
        allowed = ", ".join(map(str, ALLOWED_BITS))
        raise ValueError(
            f"bits must be one of {allowed}, got {bits!r}; use nn.Identity() to leave a tensor unquantized"
        )
    return bits


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Quantile of a flat tensor via ``kthvalue`` (``torch.quantile`` refuses tensors above 2^24 elements)."""
    k = min(x.numel(), max(1, math.ceil(q * x.numel())))
    return x.kthvalue(k).values


def _abs_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    return _quantile(x.detach().abs().flatten().float(), q)


def mse_clip(w: torch.Tensor, qmax: int, grid: int = 100) -> torch.Tensor:
    """The symmetric clip ``alpha`` in ``(0, max|w|]`` minimising ``||w - Q(w)||^2`` with step ``alpha / qmax``
    (grid search over ``max|w| * i / grid``): the usual PTQ clip for pretrained weights."""
    w = w.detach().float().flatten()
    amax = w.abs().max().clamp_min(EPS)
    alphas = amax * torch.arange(1, grid + 1, dtype=w.dtype, device=w.device) / grid  # [G]
    s = (alphas / qmax)[:, None]
    err = ((torch.clamp(torch.round(w[None] / s), -qmax, qmax) * s - w[None]) ** 2).sum(1)
    return alphas[err.argmin()]


class Quantizer(nn.Module):
    """Base class: lazy one-time init, signedness, integer ranges, ``forward`` and ``int_repr``.

    Subclasses set ``symmetric`` (signed range ``[-qmax, qmax]`` instead of ``[-2^(b-1), 2^(b-1) - 1]``),
    implement ``_init_from(x)`` (fill learned state from the first tensor, signedness already decided)
    and ``_grid(x) -> (xc, s, z, lo, hi)``: the input in the compute dtype (after any learned clip), the step ``s``,
    the integer-valued zero point ``z`` (tensor or 0) and the integer range ``[lo, hi]``, all broadcastable to ``x``,
    with gradients attached. ``q = clamp(round(xc / s) + z, lo, hi)`` and ``x_hat = (q - z) * s`` follow from it, in
    training (:func:`fake_quant`, one autograd node) and for the integers of :meth:`centered` and :meth:`int_repr`.
    """

    symmetric = False

    def __init__(self, bits: int, role: str, signed="auto", granularity: str = "per_tensor"):
        super().__init__()
        self.bits = _check_bits(bits)
        _check_choice("role", role, ROLES)
        _check_choice("signed", signed, ("auto", True, False))
        if role == "weight" and signed not in ("auto", True):
            raise ValueError("weight quantizers are always signed; pass signed='auto' or True")
        self.role = role
        self.granularity = granularity
        if role == "weight":
            signed = True
        code = -1 if signed == "auto" else int(signed)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("signed_code", torch.tensor(code, dtype=torch.int8))
        # Python mirrors of the two buffers: reading a buffer each forward would sync a GPU stream.
        self._ready = False
        self._signed = None if code < 0 else bool(code)

    @property
    def signed(self) -> bool | None:
        """True/False once decided; None for an ``"auto"`` activation quantizer not yet initialised."""
        return self._signed

    @property
    def qmax(self) -> int:
        self._require_signedness()
        return 2 ** (self.bits - 1) - 1 if self._signed else 2**self.bits - 1

    @property
    def qmin(self) -> int:
        self._require_signedness()
        if not self._signed:
            return 0
        return -self.qmax if self.symmetric else -(2 ** (self.bits - 1))

    def _require_signedness(self) -> None:
        if self._signed is None:
            raise RuntimeError(f"{type(self).__name__}: signedness is decided on the first forward; call it once")

    def _maybe_init(self, x: torch.Tensor) -> None:
        if self._ready:
            return
        # inference_mode(False) so that state created from an inference-mode batch stays trainable.
        with torch.inference_mode(False), torch.no_grad():
            x = x.detach()
            if self._signed is None:
                self._signed = bool(x.min() <= SIGN_THRESHOLD)
                self.signed_code.fill_(int(self._signed))
            self._init_from(x)
            self.initialized.fill_(True)
        self._ready = True

    def _init_from(self, x: torch.Tensor) -> None:
        pass

    def _compute_dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.promote_types(x.dtype, torch.float32)

    def _grid(self, x: torch.Tensor):
        raise NotImplementedError

    def _quantize(self, x: torch.Tensor):
        """``(q, z, s)``: the integers of ``forward(x)``, with their zero point and step."""
        xc, s, z, lo, hi = self._grid(x)
        return torch.clamp(round_ste(xc / s) + z, lo, hi), z, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._maybe_init(x)
        return fake_quant(*self._grid(x)).to(x.dtype)

    dynamic = False  # True when the scale is computed from each input (per-token min-max), not learned

    @property
    def span(self) -> int:
        """A bound on ``|q - z|``: ``qmax - qmin`` (the zero point lies in the range)."""
        return 2**self.bits - 1

    @torch.no_grad()
    def centered(self, x: torch.Tensor, high=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q - z, s)`` of ``forward(x)`` as float64: exact integers and a scale broadcastable to ``x``.

        What the integer kernels multiply; the eval forward computes its matmuls from these, exactly.
        """
        self._maybe_init(x)
        q, z, s = self._quantize(x)
        return (q - z).double(), s.detach().double()

    def int_repr(self, x: torch.Tensor):
        """Integer form of ``forward(x)`` in eval mode: ``(q, scale, zero_point)``.

        ``q`` and ``zero_point`` are int32 in the signed range ``[-2^(b-1), 2^(b-1) - 1]`` (an unsigned
        range is shifted by ``2^(b-1)`` and the shift folded into ``zero_point``); ``scale`` is float.
        ``((q - zero_point) * scale).to(x.dtype)`` equals ``forward(x)`` in eval mode bit for bit.
        Shapes: ``scale`` is ``[1]`` per tensor, ``[N, 1, ...]`` per channel, ``[..., T, 1]`` per token;
        ``zero_point`` is ``[1]``.
        """
        with torch.no_grad():
            self._maybe_init(x)
            q, z, s = self._quantize(x)
            shift = 0 if self._signed else 2 ** (self.bits - 1)
            zp = z.reshape(1) if torch.is_tensor(z) else s.new_zeros(1)
            return (q - shift).to(torch.int32), s.detach().clone(), (zp - shift).to(torch.int32)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Lazily shaped parameters (created empty) take the checkpoint's shape before the copy.
        for name, p in self._parameters.items():
            key = prefix + name
            if p is not None and p.numel() == 0 and key in state_dict and state_dict[key].numel() > 0:
                p.data = p.new_empty(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ready = bool(self.initialized)
        code = int(self.signed_code)
        self._signed = None if code < 0 else bool(code)

    def extra_repr(self) -> str:
        signed = "auto" if self._signed is None else self._signed
        return f"bits={self.bits}, role={self.role}, granularity={self.granularity}, signed={signed}"


class LSQWeightQuantizer(Quantizer):
    """LSQ weights (Esser et al. 2020): symmetric signed ``[-2^(b-1), 2^(b-1) - 1]``, learnable step ``s``.

    ``s`` is initialised on the first forward as ``2 * mean|w| / sqrt(qmax)`` (per output channel: mean
    over the row) and its gradient is scaled by ``1 / sqrt(numel_per_scale * qmax)`` so that the step
    learns at a rate comparable to the weights. Per channel, ``s`` has shape ``[N, 1]``; it is created
    with shape ``[0]`` and sized on the first forward unless ``num_channels`` is given.
    """

    def __init__(self, bits: int, granularity: str = "per_tensor", num_channels: int | None = None):
        _check_choice("granularity", granularity, ("per_tensor", "per_channel"))
        super().__init__(bits, "weight", True, granularity)
        if granularity == "per_tensor":
            shape = (1,)
        else:
            shape = (0,) if num_channels is None else (num_channels, 1)
        self.s = nn.Parameter(torch.ones(shape))

    def _check_shape(self, x: torch.Tensor) -> None:
        if self.granularity == "per_channel" and x.dim() < 2:
            raise ValueError(f"per-channel weight quantization needs a tensor of rank >= 2, got {tuple(x.shape)}")

    def _init_from(self, w: torch.Tensor) -> None:
        self._check_shape(w)
        a = w.abs().to(self.s.dtype)
        if self.granularity == "per_tensor":
            self.s.copy_((2 * a.mean() / math.sqrt(self.qmax)).clamp_min(EPS).reshape(1))
        else:
            init = (2 * a.flatten(1).mean(1) / math.sqrt(self.qmax)).clamp_min(EPS).reshape(-1, 1)
            if self.s.numel() == 0:
                self.s.data = init.to(self.s.device)
            else:
                self.s.copy_(init)

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        n = x.numel() if self.granularity == "per_tensor" else x[0].numel()
        s = grad_scale(self.s, 1.0 / math.sqrt(n * self.qmax)).clamp_min(EPS)
        return s if self.granularity == "per_tensor" else s.reshape(-1, *([1] * (x.dim() - 1)))

    def _grid(self, x: torch.Tensor):
        self._check_shape(x)
        x = x.to(self._compute_dtype(x))
        return x, self._step(x), 0, self.qmin, self.qmax

    @property
    def scale(self) -> torch.Tensor:
        """Step used by forward (``[1]`` or ``[N, 1]``), detached; the zero point is 0."""
        return self.s.detach().clamp_min(EPS)


class LSQPlusActQuantizer(Quantizer):
    """LSQ+ activations (Bhalgat et al. 2020): learnable step ``s`` and offset ``beta``, per tensor.

    ``zp = clamp(round(-beta / s), qmin, qmax)`` (STE), ``q = clamp(round(x / s) + zp, qmin, qmax)``, ``x_hat = (q - zp) * s``: the
    offset is learned in the units of ``x`` as in LSQ+, and applied as an integer zero point so the integer kernel
    reproduces training exactly (``y = s_x s_w (q_x @ q_w^T - zp * rowsum(q_w))``).

    Why ``beta`` in units of ``x`` and not an integer-step parameter: Adam moves a parameter by about ``lr`` per
    step whatever its gradient's scale, so a zero point learned in steps would need ``0.5 / lr`` consistent steps
    to change by one (it never moved at lr 1e-3 in 200 steps); in units of ``x`` it moves as LSQ+'s offset does.

    Init on the first tensor: ``s = 2 mean|x| / sqrt(qmax)`` (LSQ, the paper's), and ``beta`` at the zero point
    that minimises that tensor's squared quantization error at this step (LSQ+ initialises its offset from the
    data too): about 0 for symmetric data, shifted for skewed data. An unsigned tensor (range ``[0, 2^b - 1]``)
    keeps ``beta = 0``. The gradients of ``s`` and ``beta`` are scaled by
    ``1 / sqrt(n * qmax)`` with ``n`` the number of elements per sample (``x[0].numel()``, the LSQ paper's N_F):
    unlike ``x.numel()`` this does not change the steps' learning rate with the batch size.
    """

    def __init__(self, bits: int, signed="auto"):
        super().__init__(bits, "act", signed, "per_tensor")
        self.s = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.zeros(1))

    def _init_from(self, x: torch.Tensor) -> None:
        s = (2 * x.abs().to(self.s.dtype).mean() / math.sqrt(self.qmax)).clamp_min(EPS)
        self.s.copy_(s.reshape(1))
        self.beta.zero_()
        if self._signed:
            self.beta.copy_((-self._mse_zero_point(x, s) * s).reshape(1))

    def _mse_zero_point(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The integer zero point minimising the first batch's squared quantization error at step ``s`` (on up to
        65536 evenly spaced elements), kept inside ``[qmin + 1, qmax - 1]`` so 0 stays inside the window."""
        flat = x.detach().flatten().float()
        flat = flat[:: max(1, flat.numel() // 65536)]
        best, best_err = 0, None
        for zp in range(self.qmin + 1, self.qmax):
            err = float((((torch.clamp(torch.round(flat / s) + zp, self.qmin, self.qmax) - zp) * s - flat) ** 2).sum())
            if best_err is None or err < best_err - 1e-12 * abs(best_err) or (err <= best_err and abs(zp) < abs(best)):
                best, best_err = zp, err
        return torch.tensor(float(best))

    def _zero_point(self, s: torch.Tensor, g: float) -> torch.Tensor:
        """``round(-beta / s)`` kept in ``[qmin, qmax]``: zero stays exactly representable, as integer kernels need."""
        return torch.clamp(round_ste(-grad_scale(self.beta, g) / s), self.qmin, self.qmax)

    def _grid(self, x: torch.Tensor):
        x = x.to(self._compute_dtype(x))
        n = x[0].numel() if x.dim() >= 2 else x.numel()
        g = 1.0 / math.sqrt(n * self.qmax)
        s = grad_scale(self.s, g).clamp_min(EPS)
        return x, s, self._zero_point(s, g), self.qmin, self.qmax

    @property
    def scale(self) -> torch.Tensor:
        """Step used by forward, ``[1]``, detached."""
        return self.s.detach().clamp_min(EPS)

    @property
    def zero_point(self) -> torch.Tensor:
        """int32 ``[1]`` zero point in the signed export convention (matches ``int_repr``)."""
        self._require_signedness()
        shift = 0 if self._signed else 2 ** (self.bits - 1)
        zp = torch.clamp(torch.round(-self.beta.detach() / self.scale), self.qmin, self.qmax)
        return (zp - shift).to(torch.int32)


class _ClipQuantizer(Quantizer):
    """Shared part of PACT and NIPQ: a learnable clip ``alpha``, symmetric range, step ``alpha / qmax``.

    ``alpha`` starts at the ``act_quantile`` quantile of ``|x|`` of the first batch for activations (0.999 by
    default: near the max, without letting one outlier set the range); for weights see each subclass.
    Activations use ``[0, alpha]`` when the first batch is non-negative, else ``[-alpha, alpha]``.
    """

    symmetric = True

    def __init__(self, bits: int, role: str, signed="auto", act_quantile: float = 0.999):
        super().__init__(bits, role, signed, "per_tensor")
        if not 0.0 < act_quantile <= 1.0:
            raise ValueError(f"act_quantile must lie in (0, 1], got {act_quantile!r}")
        self.act_quantile = act_quantile
        self.alpha = nn.Parameter(torch.ones(1))

    def _init_from(self, x: torch.Tensor) -> None:
        a = self._weight_clip_init(x) if self.role == "weight" else _abs_quantile(x, self.act_quantile)
        self.alpha.copy_(a.to(self.alpha.dtype).clamp_min(EPS).reshape(1))

    def _weight_clip_init(self, w: torch.Tensor) -> torch.Tensor:
        return w.abs().amax()

    def _clip(self, x: torch.Tensor):
        """``(clamp(x, lo, alpha), alpha)``; clamp with tensor bounds gives alpha the PACT gradient."""
        x = x.to(self._compute_dtype(x))
        a = self.alpha.clamp_min(EPS)
        lo = -a if self._signed else torch.zeros_like(a)
        return torch.clamp(x, lo, a), a

    @property
    def scale(self) -> torch.Tensor:
        """Step ``alpha / qmax``, ``[1]``, detached; the zero point is ``int_repr``'s (0, or -2^(b-1) if unsigned)."""
        return self.alpha.detach().clamp_min(EPS) / self.qmax


class PACTQuantizer(_ClipQuantizer):
    """PACT (Choi et al. 2018): clip to a learnable ``alpha``, then round with STE.

    As in the paper, the step ``alpha / qmax`` is detached inside the rounding, so ``alpha`` learns only
    from clipped values (``d x_hat / d alpha = sign(x)`` there, 0 inside the range).

    Weights get the same learnable clip (the PACT paper quantizes weights with DoReFa instead; a learnable
    clip on weights is the common PACT baseline for transformers). It starts at the MSE-optimal clip of the
    pretrained weights, below ``max|w|``: started at ``max|w|`` nothing clips, so ``alpha`` never got a gradient.
    """

    def _weight_clip_init(self, w: torch.Tensor) -> torch.Tensor:
        return mse_clip(w, self.qmax)

    def _grid(self, x: torch.Tensor):
        xc, a = self._clip(x)
        return xc, (a / self.qmax).detach(), 0, self.qmin, self.qmax


class NIPQQuantizer(_ClipQuantizer):
    """NIPQ (Shin et al. 2023): pseudo-quantization noise on a learnable truncation, then hard quantization.

    Training, noise phase: ``x_hat = clamp(x, lo, alpha) + U(-0.5, 0.5) * alpha / qmax`` (no rounding; the noise
    carries a gradient to ``alpha`` for every element). Training with ``hard = True`` (the final phase, set by
    :func:`set_nipq_hard`), eval and ``int_repr``: real rounding with STE, gradient to ``alpha`` through both the
    clip and the step. NIPQ's own code trains with noise, then fine-tunes a few epochs with real quantization
    (``ft_epoch``) so the network ends on the arithmetic it will run; ``method.hard_fraction`` sets that share.
    Noise comes from the global torch RNG, so runs are reproducible under ``torch.manual_seed``.
    """

    def __init__(self, bits: int, role: str, signed="auto", act_quantile: float = 0.999):
        super().__init__(bits, role, signed, act_quantile)
        self.hard = False

    def _grid(self, x: torch.Tensor):
        xc, a = self._clip(x)
        return xc, a / self.qmax, 0, self.qmin, self.qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._maybe_init(x)
        if not self.training or self.hard:
            return super().forward(x)
        xc, a = self._clip(x)
        return (xc + (torch.rand_like(xc) - 0.5) * (a / self.qmax)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hard={self.hard}"


def set_nipq_hard(model: nn.Module, hard: bool) -> int:
    """Switch every NIPQ quantizer of ``model`` between its noise phase and hard quantization; returns how many."""
    qs = [m for m in model.modules() if isinstance(m, NIPQQuantizer)]
    for q in qs:
        q.hard = hard
    return len(qs)


class MinMaxQuantizer(Quantizer):
    """LLM-QAT baseline (Liu et al. 2023): symmetric MinMax scales, no learned parameters, STE rounding.

    Weights: ``scale = max|w| / qmax`` per output channel (default) or per tensor. Activations: dynamic,
    ``scale = max|x| / qmax`` per token (over the last dim, default) or per tensor. The scale is detached
    (the max is not differentiated), so the gradient is the clipped STE. An activation found unsigned by
    ``signed="auto"`` uses ``[0, 2^b - 1]`` with the same max-based scale; pass ``signed=True`` for the
    strictly symmetric variant.
    """

    symmetric = True
    dynamic = True

    def __init__(self, bits: int, role: str, granularity: str | None = None, signed="auto"):
        allowed = ("per_channel", "per_tensor") if role == "weight" else ("per_token", "per_tensor")
        granularity = granularity or allowed[0]
        _check_choice("granularity", granularity, allowed)
        super().__init__(bits, role, signed, granularity)

    def _grid(self, x: torch.Tensor):
        x = x.to(self._compute_dtype(x))
        a = x.detach().abs()
        if self.granularity == "per_tensor":
            m = a.amax().reshape(1)
        elif self.granularity == "per_token":
            m = a.amax(-1, keepdim=True)
        else:
            if x.dim() < 2:
                raise ValueError(f"per-channel weight quantization needs a tensor of rank >= 2, got {tuple(x.shape)}")
            m = a.amax(dim=tuple(range(1, x.dim())), keepdim=True)
        return x, (m / self.qmax).clamp_min(EPS), 0, self.qmin, self.qmax


class ProbQuantizer(Quantizer):
    """Softmax probabilities: unsigned ``[0, 2^b - 1]`` with the fixed step ``1 / (2^b - 1)``, zero point 0.

    A probability lies in ``[0, 1]``, so this grid covers every row maximum and nothing is ever clipped: a
    quantized row sums to 1 up to rounding. A data-initialised step (LSQ's ``2 mean|p| / sqrt(qmax)``) clips
    near 0.25 and threw away most of the attention mass. Nothing is learned, so every method gets the same
    treatment of this site. The gradient is the straight-through estimator.
    """

    def __init__(self, bits: int = 8):
        super().__init__(bits, "act", False, "per_tensor")
        self.register_buffer("s", torch.tensor([1.0 / (2**bits - 1)]), persistent=False)
        self._ready = True
        self.initialized.fill_(True)

    def _grid(self, x: torch.Tensor):
        x = x.to(self._compute_dtype(x))
        return x, self.s.to(x.dtype), 0, 0, self.qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The grid's values with the plain straight-through gradient: a probability never leaves ``[0, 1]``, so
        nothing clips and the clipped STE is the identity. Skips the clip bookkeeping on the largest tensors of a
        training step (``B x H x T x T`` per layer)."""
        xc, s, _, lo, hi = self._grid(x)
        return _GridSTE.apply(xc, s, lo, hi).to(x.dtype)

    @property
    def scale(self) -> torch.Tensor:
        return self.s.detach().clone()


class _GridSTE(torch.autograd.Function):
    """``clamp(round(x / s), lo, hi) * s`` forward, identity backward (for inputs that never clip)."""

    @staticmethod
    def forward(ctx, x, s, lo, hi):
        return (x / s).round_().clamp_(lo, hi).mul_(s)

    @staticmethod
    def backward(ctx, g):
        return g, None, None, None


def make_quantizer(method: str, role: str, bits: int, **opts) -> Quantizer:
    """Build the quantizer for ``method`` ("lsq" = "squat": LSQ weights / LSQ+ activations, "pact",
    "nipq", "llmqat") and ``role`` ("weight" or "act").

    ``opts``: ``granularity`` (weights: "per_tensor" | "per_channel"; llmqat activations also
    "per_token"), ``signed`` (activations: "auto" | True | False; weights accept only "auto"/True),
    and method-specific keywords passed through (``num_channels``, ``act_quantile``).
    Defaults follow the paper: LSQ per tensor, LLM-QAT per output channel / per token.
    """
    _check_choice("method", method, METHODS)
    _check_choice("role", role, ROLES)
    granularity = opts.pop("granularity", None)
    signed = opts.pop("signed", "auto")
    if role == "weight":
        _check_choice("signed (weights are always signed)", signed, ("auto", True))
    if method == "llmqat":
        return MinMaxQuantizer(bits, role, granularity, signed, **opts)
    if method in ("lsq", "squat"):
        if role == "weight":
            return LSQWeightQuantizer(bits, granularity or "per_tensor", **opts)
        _check_choice("granularity", granularity, (None, "per_tensor"))
        return LSQPlusActQuantizer(bits, signed, **opts)
    _check_choice("granularity", granularity, (None, "per_tensor"))
    cls = PACTQuantizer if method == "pact" else NIPQQuantizer
    return cls(bits, role, signed, **opts)
