"""Tests for squat.quant.quantizers: values on hand-made tensors, gradients, integer export, persistence."""
import io
import math

import pytest
import torch

from squat.quant.quantizers import (
    LSQPlusActQuantizer,
    LSQWeightQuantizer,
    MinMaxQuantizer,
    NIPQQuantizer,
    PACTQuantizer,
    make_quantizer,
    round_ste,
)

BUILDERS = {
    "lsq_w_tensor": lambda b: LSQWeightQuantizer(b),
    "lsq_w_channel": lambda b: LSQWeightQuantizer(b, "per_channel"),
    "lsq_act_auto": lambda b: LSQPlusActQuantizer(b),
    "lsq_act_unsigned": lambda b: LSQPlusActQuantizer(b, signed=False),
    "pact_w": lambda b: PACTQuantizer(b, "weight"),
    "pact_act": lambda b: PACTQuantizer(b, "act"),
    "nipq_w": lambda b: NIPQQuantizer(b, "weight"),
    "nipq_act": lambda b: NIPQQuantizer(b, "act"),
    "minmax_w": lambda b: MinMaxQuantizer(b, "weight"),
    "minmax_act": lambda b: MinMaxQuantizer(b, "act"),
}
SHAPES = {2: (6, 16), 3: (2, 5, 16), 4: (2, 3, 5, 8)}


def _perturb(q):
    """Move learned state away from its init so exactness is not a property of the init values."""
    with torch.no_grad():
        if hasattr(q, "s"):
            q.s.mul_(1.37)
        if hasattr(q, "beta"):
            q.beta.copy_(-2.6 * q.s)  # zero point round(2.6) = 3
        if hasattr(q, "alpha"):
            q.alpha.mul_(0.61)


def test_round_ste_values_and_identity_gradient():
    x = torch.tensor([-2.5, -1.4, -0.5, 0.49, 0.5, 1.5, 3.7], requires_grad=True)
    y = round_ste(x)
    assert torch.equal(y, torch.tensor([-2.0, -1.0, -0.0, 0.0, 0.0, 2.0, 4.0]))
    y.backward(torch.arange(7.0))
    assert torch.equal(x.grad, torch.arange(7.0))


@pytest.mark.parametrize("make", [
    lambda: LSQWeightQuantizer(4),
    lambda: LSQPlusActQuantizer(4, signed=True),
    lambda: MinMaxQuantizer(4, "act", "per_tensor"),
])
def test_clipped_ste_gradient_passes_inside_and_is_zero_outside(make):
    q = make()
    q(torch.randn(8))
    if hasattr(q, "s"):
        with torch.no_grad():
            q.s.fill_(1.0)
            if hasattr(q, "beta"):
                q.beta.zero_()
        x = torch.tensor([-12.0, -8.4, -3.4, 0.3, 6.9, 7.6, 20.0], requires_grad=True)
        expected = torch.tensor([0.0, 1, 1, 1, 1, 0, 0])  # round(x) in [-8, 7]
    else:  # MinMax: scale = 14/7 = 2, range [-7, 7] * 2; only the max itself can sit at the edge
        x = torch.tensor([-14.0, -3.4, 0.3, 6.9, 14.0], requires_grad=True)
        expected = torch.ones(5)
    q(x).sum().backward()
    assert torch.allclose(x.grad, expected, atol=1e-6)
    assert torch.equal(x.grad == 0, expected == 0)


def test_pact_gradient_to_alpha_is_sign_of_clipped_values_only():
    q = PACTQuantizer(4, "weight")
    q(torch.tensor([1.0, -1.0]))  # alpha = max|w| = 1
    x = torch.tensor([-3.0, -0.5, 0.2, 0.9, 2.0, 5.0], requires_grad=True)
    q(x).sum().backward()
    assert q.alpha.grad.item() == pytest.approx(-1 + 1 + 1)  # one clipped below, two above
    assert torch.allclose(x.grad, torch.tensor([0.0, 1, 1, 1, 0, 0]), atol=1e-6)


def test_lsq_weight_init_is_two_mean_abs_over_sqrt_qmax_exactly():
    w = torch.randn(6, 10)
    q = LSQWeightQuantizer(4)
    q(w)
    assert torch.equal(q.s.detach(), (2 * w.abs().mean() / math.sqrt(7)).reshape(1))
    qc = LSQWeightQuantizer(8, "per_channel")
    qc(w)
    assert torch.equal(qc.s.detach(), (2 * w.abs().mean(1) / math.sqrt(127)).reshape(6, 1))


def test_lsq_plus_init_uses_qmax_of_chosen_range():
    x = torch.rand(3, 4, 5)
    q = LSQPlusActQuantizer(4)
    q(x)
    assert q.signed is False
    assert torch.equal(q.s.detach(), (2 * x.abs().mean() / math.sqrt(15)).reshape(1))
    assert q.beta.item() == 0.0 and q.zero_point.item() == -8  # unsigned grid [0, 15], shifted to the signed one
    qs = LSQPlusActQuantizer(4)
    qs(x - 0.5)
    assert torch.equal(qs.s.detach(), (2 * (x - 0.5).abs().mean() / math.sqrt(7)).reshape(1))
    assert qs.zero_point.item() == 0  # symmetric data: the window stays centred on 0


def test_lsq_plus_offset_init_minimises_error_on_skewed_data():
    torch.manual_seed(0)
    x = torch.randn(8, 64).exp() - 1.2  # signed, long right tail
    q = LSQPlusActQuantizer(4)
    q(x)
    zp = q.zero_point.item()
    err = lambda z: float((((torch.clamp(torch.round(x / q.scale) + z, -8, 7) - z) * q.scale - x) ** 2).sum())  # noqa: E731
    assert zp < 0  # the window moves right, towards the tail
    assert err(zp) == min(err(z) for z in range(-7, 7)) < err(0)


def _lsq_ds(x, s, qmin, qmax):
    """Unscaled LSQ d x_hat / d s per element."""
    v = x / s
    r = torch.round(v)
    return torch.where((r >= qmin) & (r <= qmax), r - v, r.clamp(qmin, qmax))


def test_lsq_weight_step_gradient_is_scaled_by_one_over_sqrt_numel_qmax():
    torch.manual_seed(0)
    w = torch.randn(4, 32)
    q = LSQWeightQuantizer(4)
    q(w)
    with torch.no_grad():
        q.s.fill_(0.3)  # clips some weights, so both branches of the LSQ gradient occur
    q(w).sum().backward()
    g = 1 / math.sqrt(w.numel() * 7)
    expected = g * _lsq_ds(w, torch.tensor(0.3), -8, 7).sum()
    assert q.s.grad.item() == pytest.approx(expected.item(), rel=1e-5)

    qc = LSQWeightQuantizer(4, "per_channel")
    qc(w)
    s = qc.s.detach().clone()
    qc(w).sum().backward()
    expected = _lsq_ds(w, s, -8, 7).sum(1, keepdim=True) / math.sqrt(32 * 7)
    assert torch.allclose(qc.s.grad, expected, rtol=1e-5, atol=1e-7)


def test_lsq_plus_gradient_scale_uses_per_sample_numel():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8) * 2
    q = LSQPlusActQuantizer(4, signed=True)
    q(x)
    with torch.no_grad():
        q.s.fill_(0.25)
        q.beta.zero_()
    q(x).sum().backward()
    expected = _lsq_ds(x, torch.tensor(0.25), -8, 7).sum() / math.sqrt(24 * 7)
    assert q.s.grad.item() == pytest.approx(expected.item(), rel=1e-5)
    # beta (in units of x) gets +1 per clipped element (inside the range the zero point cancels), times the scale
    r = torch.round(x / 0.25) + q.zero_point
    clipped = ((r < -8) | (r > 7)).sum().item()
    assert clipped > 0
    assert q.beta.grad.item() == pytest.approx(clipped / math.sqrt(24 * 7), rel=1e-5)


@pytest.mark.parametrize("name", ["lsq_w_tensor", "lsq_w_channel", "lsq_act_auto", "pact_w", "pact_act",
                                  "nipq_w", "nipq_act"])
@pytest.mark.parametrize("train", [True, False])
def test_gradients_reach_every_learnable_parameter(name, train):
    torch.manual_seed(0)
    q = BUILDERS[name](4)
    q(torch.randn(4, 8))
    q.train(train)
    x = torch.randn(4, 8) * 3  # wider than the init batch: some values clip
    (q(x) * torch.randn(4, 8)).sum().backward()
    params = dict(q.named_parameters())
    assert params
    for pname, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("cls", [LSQPlusActQuantizer, lambda b: PACTQuantizer(b, "act"),
                                 lambda b: NIPQQuantizer(b, "act"), lambda b: MinMaxQuantizer(b, "act")])
def test_activation_signedness_is_decided_on_first_batch(cls):
    q = cls(4)
    assert q.signed is None
    q(torch.tensor([[0.0, -1e-6, 2.0, 3.0]]))
    assert q.signed is False and (q.qmin, q.qmax) == (0, 15)
    q(torch.tensor([[-5.0, 1.0]]))  # later negative batches do not flip it
    assert q.signed is False
    qs = cls(4)
    qs(torch.tensor([[0.5, -0.01, 2.0]]))
    assert qs.signed is True and qs.qmax == 7
    assert qs.qmin == (-8 if isinstance(qs, LSQPlusActQuantizer) else -7)


def test_unsigned_activation_clips_negatives_to_zero():
    q = LSQPlusActQuantizer(4)
    q(torch.rand(10))
    out = q(torch.tensor([-3.0, -0.1]))
    assert torch.equal(out, torch.zeros(2))


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("rank", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int_repr_reconstructs_eval_forward_exactly(name, bits, rank, dtype):
    torch.manual_seed(bits * 10 + rank)
    q = BUILDERS[name](bits)
    q(torch.randn(SHAPES[rank]).abs() if name == "lsq_act_unsigned" else torch.randn(SHAPES[rank]))
    _perturb(q)
    q.eval()
    x = (torch.randn(SHAPES[rank]) * 1.5).to(dtype)
    qi, scale, zp = q.int_repr(x)
    assert qi.dtype == torch.int32 and zp.dtype == torch.int32 and scale.is_floating_point()
    assert qi.shape == x.shape and zp.shape == (1,)
    assert qi.min() >= -(2 ** (bits - 1)) and qi.max() <= 2 ** (bits - 1) - 1
    y = q(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.equal(((qi - zp) * scale).to(dtype), y)
    if name == "lsq_act_auto":
        assert zp.item() == min(3, 2 ** (bits - 1) - 1)  # round(2.6), kept inside [qmin, qmax]; signed: no shift
    if name == "lsq_act_unsigned":
        assert zp.item() == 3 - 2 ** (bits - 1)


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantization_error_at_most_half_step_inside_range(name, bits):
    torch.manual_seed(bits)
    q = BUILDERS[name](bits)
    x = torch.randn(4, 6, 16)
    x = x.abs() if name == "lsq_act_unsigned" else x
    q(x)
    q.eval()
    qi, scale, zp = q.int_repr(x)
    lo, hi = (-(2 ** (bits - 1)) - zp) * scale, (2 ** (bits - 1) - 1 - zp) * scale
    if name.startswith(("pact", "nipq", "minmax")) and q.signed:
        lo = lo + scale  # symmetric range [-qmax, qmax]
    inside = (x >= lo) & (x <= hi)
    assert inside.float().mean() > 0.5
    err = (x - q(x)).abs()
    bound = (scale / 2).expand_as(x)
    assert (err[inside] <= bound[inside] * (1 + 1e-5)).all()


def test_per_channel_and_per_tensor_shapes():
    w = torch.randn(5, 12)
    lazy = LSQWeightQuantizer(4, "per_channel")
    assert lazy.s.shape == (0,)
    lazy(w)
    assert lazy.s.shape == (5, 1) and lazy.scale.shape == (5, 1)
    eager = LSQWeightQuantizer(4, "per_channel", num_channels=5)
    assert eager.s.shape == (5, 1)
    eager(w)
    assert torch.equal(eager.s, lazy.s)
    pt = LSQWeightQuantizer(4)
    assert pt.s.shape == (1,)
    assert pt.int_repr(w)[1].shape == (1,)
    assert lazy.int_repr(w)[1].shape == (5, 1)
    assert lazy.int_repr(torch.randn(5, 3, 4))[1].shape == (5, 1, 1)
    assert MinMaxQuantizer(4, "weight").int_repr(w)[1].shape == (5, 1)
    assert MinMaxQuantizer(4, "weight", "per_tensor").int_repr(w)[1].shape == (1,)
    with pytest.raises(ValueError, match="rank >= 2"):
        LSQWeightQuantizer(4, "per_channel")(torch.randn(5))


def test_per_channel_scales_differ_per_row():
    w = torch.stack([torch.linspace(-1, 1, 8), torch.linspace(-10, 10, 8)])
    q = LSQWeightQuantizer(4, "per_channel")
    q(w)
    assert q.s[1].item() == pytest.approx(10 * q.s[0].item(), rel=1e-6)


def test_minmax_per_token_and_per_channel_scales():
    x = torch.tensor([[[1.0, -4.0, 2.0], [0.5, 0.25, -0.5], [0.0, 0.0, 0.0]]])  # [1, 3, 3]
    q = MinMaxQuantizer(8, "act", signed=True)
    qi, scale, zp = q.int_repr(x)
    assert torch.allclose(scale, torch.tensor([[[4.0], [0.5], [0.0]]]).clamp_min(1e-8) / 127)
    assert qi[0, 0, 1].item() == -127 and qi[0, 1, 0].item() == 127
    assert torch.equal(q(x)[0, 2], torch.zeros(3))  # an all-zero token stays finite and zero
    x4 = torch.randn(2, 2, 3, 8)
    assert torch.equal(q.int_repr(x4)[1], x4.abs().amax(-1, keepdim=True) / 127)
    w = torch.tensor([[1.0, -2.0], [0.0, 0.7]])
    qw = MinMaxQuantizer(4, "weight")
    assert torch.equal(qw.int_repr(w)[1], torch.tensor([[2.0 / 7], [0.7 / 7]]))


def test_minmax_has_no_parameters():
    assert list(MinMaxQuantizer(4, "act").parameters()) == []


def _roundtrip(q):
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf)


@pytest.mark.parametrize("make", [lambda: LSQWeightQuantizer(4, "per_channel"), lambda: LSQPlusActQuantizer(4),
                                  lambda: PACTQuantizer(4, "act"), lambda: NIPQQuantizer(8, "act")])
def test_state_dict_round_trip_keeps_init(make):
    torch.manual_seed(0)
    q = make()
    q(torch.rand(4, 8) + 0.1)  # non-negative: activations decide unsigned
    _perturb(q)
    sd = _roundtrip(q)
    fresh = make()
    fresh.load_state_dict(sd)
    assert fresh.initialized.item() is True
    assert fresh.signed == q.signed
    x2 = torch.randn(4, 8) * 10  # very different statistics, negative values
    fresh(x2)  # must not re-initialise
    for name, p in q.named_parameters():
        assert torch.equal(dict(fresh.named_parameters())[name], p), name
    fresh.eval()
    q.eval()
    assert torch.equal(fresh(x2), q(x2))


def test_uninitialised_state_dict_loads_and_inits_later():
    sd = _roundtrip(LSQPlusActQuantizer(4))
    q = LSQPlusActQuantizer(4)
    q.load_state_dict(sd)
    assert q.signed is None
    x = torch.rand(3, 4)
    q(x)
    assert q.signed is False and torch.equal(q.s.detach(), (2 * x.mean() / math.sqrt(15)).reshape(1))


def test_optimizer_after_dummy_forward_trains_lazy_per_channel_step():
    w = torch.randn(3, 16, requires_grad=True)
    q = LSQWeightQuantizer(4, "per_channel")
    q(w.detach())
    opt = torch.optim.SGD(q.parameters(), lr=1.0)
    before = q.s.detach().clone()
    ((q(w) - 1.0) ** 2).sum().backward()
    opt.step()
    assert q.s.shape == (3, 1) and not torch.equal(q.s.detach(), before)


@pytest.mark.parametrize("ctx", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("make", [lambda: LSQPlusActQuantizer(4), lambda: LSQWeightQuantizer(4, "per_channel")])
def test_lazy_init_under_no_grad_or_inference_mode_then_training(ctx, make):
    x = torch.randn(2, 4, 8)
    q = make()
    with ctx():
        q(x)
    assert q.initialized.item() is True and q.signed is True
    assert not q.s.is_inference()
    q(x * 3).sum().backward()
    assert q.s.grad is not None and q.s.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["lsq_w_tensor", "lsq_w_channel", "lsq_act_auto", "lsq_act_unsigned", "pact_act",
                                  "nipq_w"])
def test_scale_and_zero_point_properties_match_int_repr(name):
    torch.manual_seed(0)
    q = BUILDERS[name](4)
    x = torch.rand(64, 8) + 0.01
    q(x)
    _perturb(q)
    for _ in range(20):  # many step values: an ulp mismatch in the step would show up
        with torch.no_grad():
            for p in q.parameters():
                p.mul_(1 + 0.1 * torch.rand(()))
        _, scale, zp = q.int_repr(x)
        assert torch.equal(q.scale, scale)
        if hasattr(q, "zero_point"):
            assert torch.equal(q.zero_point, zp)


def test_nipq_noise_in_train_rounding_in_eval():
    x = torch.linspace(-1, 1, 64).reshape(4, 16)
    q = NIPQQuantizer(4, "weight")
    q(x)  # alpha = 1, step 1/7
    s = 1 / 7
    torch.manual_seed(1)
    noisy = q(x)
    torch.manual_seed(1)
    assert torch.equal(q(x), noisy)  # reproducible under the seed
    assert not torch.equal(q(x), noisy)  # the next draw differs
    grid_err = (noisy / s - torch.round(noisy / s)).abs()
    assert grid_err.max() > 0.1  # not on the quantization grid
    assert (noisy - x).abs().max() <= s / 2 + 1e-6  # uniform noise of one step width
    q.eval()
    hard = q(x)
    assert torch.allclose(hard / s, torch.round(hard / s), atol=1e-4)
    assert torch.equal(hard, q(x))


def test_nipq_hard_phase_is_the_eval_quantizer_in_training():
    x = torch.linspace(-1, 1, 32)
    q = NIPQQuantizer(4, "weight")
    noisy = q(x)
    q.hard = True
    hard = q(x)
    q.eval()
    assert torch.equal(hard, q(x)) and not torch.equal(noisy, hard)


def test_pact_weight_clip_starts_below_max_and_learns():
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    q = PACTQuantizer(4, "weight")
    q(w)
    assert 0.3 * w.abs().max() < q.alpha.item() < w.abs().max()  # the MSE-optimal 4-bit clip of a Gaussian
    q(w).pow(2).sum().backward()
    assert q.alpha.grad.abs().item() > 0


def test_bf16_inputs_keep_dtype_and_shape():
    x = torch.randn(2, 3, 4, 8, dtype=torch.bfloat16)
    for name, make in BUILDERS.items():
        y = make(4)(x)
        assert y.dtype == torch.bfloat16 and y.shape == x.shape, name
        assert torch.isfinite(y).all(), name


@pytest.mark.parametrize("bits", [None, 0, 1, 9, 16, 4.0, True])
def test_bad_bits_raise_readable_value_error(bits):
    for make in [lambda: LSQWeightQuantizer(bits), lambda: LSQPlusActQuantizer(bits),
                 lambda: PACTQuantizer(bits, "act"), lambda: NIPQQuantizer(bits, "weight"),
                 lambda: MinMaxQuantizer(bits, "act"), lambda: make_quantizer("squat", "act", bits)]:
        with pytest.raises(ValueError, match=r"bits must be one of 2, 3, 4, 5, 6, 7, 8.*nn.Identity"):
            make()


@pytest.mark.parametrize("bits", [2, 3, 5, 6, 7, 8])
def test_all_allowed_bits_construct(bits):
    assert LSQWeightQuantizer(bits).qmax == 2 ** (bits - 1) - 1


def test_make_quantizer_methods_and_options():
    assert type(make_quantizer("squat", "weight", 4)) is LSQWeightQuantizer
    assert type(make_quantizer("lsq", "act", 4)) is LSQPlusActQuantizer
    assert type(make_quantizer("pact", "act", 4)) is PACTQuantizer
    assert type(make_quantizer("nipq", "weight", 4)) is NIPQQuantizer
    assert make_quantizer("llmqat", "weight", 4).granularity == "per_channel"
    assert make_quantizer("llmqat", "act", 8).granularity == "per_token"
    assert make_quantizer("lsq", "weight", 4, granularity="per_channel").granularity == "per_channel"
    assert make_quantizer("lsq", "act", 8, signed=False).signed is False
    with pytest.raises(ValueError, match="weights are always signed"):
        make_quantizer("lsq", "weight", 4, signed=False)
    with pytest.raises(ValueError, match="granularity"):
        make_quantizer("pact", "weight", 4, granularity="per_channel")
    with pytest.raises(ValueError, match="role"):
        make_quantizer("lsq", "bias", 4)


def test_make_quantizer_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="'lsq', 'squat', 'pact', 'nipq', 'llmqat'.*'gptq'"):
        make_quantizer("gptq", "weight", 4)


def test_extra_repr_shows_bits_granularity_and_signedness():
    q = LSQPlusActQuantizer(4)
    assert "bits=4" in repr(q) and "granularity=per_tensor" in repr(q) and "signed=auto" in repr(q)
    q(torch.rand(3))
    assert "signed=False" in repr(q)
    assert "granularity=per_channel" in repr(LSQWeightQuantizer(8, "per_channel"))


@pytest.mark.parametrize("case", ["per_tensor", "per_channel", "per_token_grid"])
def test_fused_fake_quant_equals_the_unfused_expression_and_its_gradients(case):
    """fake_quant is one autograd node for (clamp(round(x/s) + z, lo, hi) - z) * s: the same values bit for bit, and
    the gradients autograd gives the unfused expression with a straight-through round (x, s and z)."""
    from squat.quant.quantizers import fake_quant, round_ste

    torch.manual_seed(0)
    x = torch.randn(3, 7, 16) * 2
    if case == "per_tensor":
        s, z, lo, hi = torch.tensor([0.3]), torch.tensor([2.0]), -8, 7
    elif case == "per_channel":
        s, z, lo, hi = torch.rand(3, 1, 1) * 0.01 + 0.01, torch.tensor([-1.0]), -128, 127
    else:  # token-adaptive: step, zero point and range picked per token
        m = torch.rand(3, 7, 1) > 0.5
        s = torch.where(m, torch.tensor([0.02]), torch.tensor([0.4]))
        z = torch.where(m, torch.tensor([3.0]), torch.tensor([-1.0]))
        lo, hi = torch.where(m, -128.0, -8.0), torch.where(m, 127.0, 7.0)
    g = torch.randn_like(x)
    leaves = []
    for fused in (True, False):
        xs, ss, zs = (t.clone().requires_grad_() for t in (x, s, z))
        y = fake_quant(xs, ss, zs, lo, hi) if fused else (torch.clamp(round_ste(xs / ss) + zs, lo, hi) - zs) * ss
        (y * g).sum().backward()
        leaves.append((y.detach(), xs.grad, ss.grad, zs.grad))
    (yf, *gf), (yu, *gu) = leaves
    assert torch.equal(yf, yu)
    assert torch.equal(gf[0], g * (gf[0] != 0))  # exactly the STE: g inside the range (unfused: (g * s) / s)
    for a, b in zip(gf, gu):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # float sums in another order
    assert gf[2].abs().sum() > 0  # something clipped, so the zero point learns
