"""Closed-form and behavioural tests of squat.losses (CPU, seconds)."""

import math

import pytest
import torch
import torch.nn.functional as F

from squat.losses import distillation_loss, distribution_loss, entropy_loss, total_loss

LN = math.log


def _logits(*probs):
    """Logits whose softmax is exactly ``probs`` (one row per argument)."""
    return torch.tensor([[LN(p) for p in row] for row in probs], dtype=torch.float64).float()


# ----------------------------------------------------------------------------- distillation


def test_ce_ignores_masked_positions_and_gamma0_is_pure_ce():
    s = _logits([0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.2, 0.3, 0.5])[None]  # [1, 3, 3]
    s[0, 1] = torch.tensor([1000.0, -1000.0, 0.0])  # ignored row: would dominate CE if counted
    t = torch.randn(1, 3, 3)
    labels = torch.tensor([[0, -100, 2]])
    out = distillation_loss(s, t, labels, gamma=0.0)
    expected_ce = (-LN(0.5) - LN(0.5)) / 2  # = log 2
    assert out["ce"].item() == pytest.approx(expected_ce, abs=1e-6)
    assert out["loss"].item() == pytest.approx(expected_ce, abs=1e-6)


def test_kl_forward_reverse_jsd_closed_form():
    # Temperature 2 with logits 2*log(p): the tempered distributions are exactly p.
    pt, ps = [0.5, 0.5], [0.25, 0.75]
    t = 2 * _logits(pt)[None]  # [1, 1, 2]
    s = 2 * _logits(ps)[None]
    labels = torch.tensor([[1]])
    fwd = 0.5 * LN(0.5 / 0.25) + 0.5 * LN(0.5 / 0.75)
    rev = 0.25 * LN(0.25 / 0.5) + 0.75 * LN(0.75 / 0.5)
    m = [0.375, 0.625]
    jsd = 0.5 * sum(a * LN(a / b) for a, b in zip(pt, m)) + 0.5 * sum(a * LN(a / b) for a, b in zip(ps, m))
    # CE uses the raw (untempered) student logits: softmax(2 log ps) = ps^2 / sum ps^2.
    ce = -LN(0.75**2 / (0.25**2 + 0.75**2))
    for direction, d in (("forward", fwd), ("reverse", rev), ("jsd", jsd)):
        out = distillation_loss(s, t, labels, gamma=0.5, temperature=2.0, direction=direction)
        assert out["kl"].item() == pytest.approx(d, abs=1e-6), direction
        assert out["ce"].item() == pytest.approx(ce, abs=1e-6)
        assert out["loss"].item() == pytest.approx(0.5 * ce + 0.5 * 4.0 * d, abs=1e-6)
    assert fwd != pytest.approx(rev)


def test_kl_excludes_ignored_positions():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    labels = torch.tensor([[1, 2, -100, -100], [0, -100, 4, 3]])
    t2 = t.clone()
    t2[labels == -100] = 50 * torch.randn(3, 5)  # change only ignored teacher rows
    for d in ("forward", "reverse", "jsd"):
        a = distillation_loss(s, t, labels, direction=d)
        b = distillation_loss(s, t2, labels, direction=d)
        assert a["kl"].item() == pytest.approx(b["kl"].item(), abs=1e-6)


def test_jsd_symmetric_and_bounded():
    torch.manual_seed(1)
    s, t = 3 * torch.randn(2, 5, 11), 3 * torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    a = distillation_loss(s, t, labels, direction="jsd", temperature=1.0)["kl"]
    b = distillation_loss(t, s, labels, direction="jsd", temperature=1.0)["kl"]
    assert a.item() == pytest.approx(b.item(), abs=1e-6)
    assert 0 < a.item() <= LN(2)
    f = distillation_loss(s, t, labels, direction="forward", temperature=1.0)["kl"]
    r = distillation_loss(t, s, labels, direction="forward", temperature=1.0)["kl"]
    assert f.item() != pytest.approx(r.item(), abs=1e-3)  # forward KL is not symmetric


def test_distillation_matches_explicit_per_token_loop_and_is_stable():
    torch.manual_seed(2)
    B, T, V = 2, 3, 7
    s, t = 4 * torch.randn(B, T, V), 4 * torch.randn(B, T, V)
    labels = torch.tensor([[1, -100, 6], [0, 3, -100]])
    out = distillation_loss(s, t, labels, gamma=0.3, temperature=1.5)
    ce = kl = 0.0
    n = 0
    for b in range(B):
        for i in range(T):
            if labels[b, i] == -100:
                continue
            n += 1
            ce += -torch.log(torch.softmax(s[b, i].double(), -1)[labels[b, i]])
            ps = torch.softmax(s[b, i].double() / 1.5, -1)
            pt = torch.softmax(t[b, i].double() / 1.5, -1)
            kl += (pt * (pt / ps).log()).sum()
    assert out["ce"].item() == pytest.approx(ce.item() / n, rel=1e-5)
    assert out["kl"].item() == pytest.approx(kl.item() / n, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.7 * ce.item() / n + 0.3 * 1.5**2 * kl.item() / n, rel=1e-5)

    huge = distillation_loss(1e4 * s.half(), -1e4 * t.half().float(), labels, direction="jsd")
    assert all(torch.isfinite(v) for v in huge.values())
    empty = distillation_loss(s, t, torch.full((B, T), -100))
    assert all(v.item() == 0.0 for v in empty.values())


# ----------------------------------------------------------------------------- entropy


def _hand_qk():
    # [L=1, B=1, H=2, T=2, D=2]. Per-token (biased) variance over D of [x, y] is ((x - y) / 2)^2.
    q = torch.tensor([[[[1.0, -1.0], [5.0, 3.0]], [[2.0, -2.0], [0.0, 0.0]]]])[None]
    k = torch.tensor([[[[0.0, 2.0], [0.0, 2.0]], [[3.0, -3.0], [1.0, -1.0]]]])[None]
    # per-token vars: q head0 [1, 1], head1 [4, 0]; k head0 [1, 1], head1 [9, 1]
    return q, k


def test_entropy_loss_closed_form_paper_vs_code():
    q, k = _hand_qk()
    vq, vk = [1.0, 2.0], [1.0, 5.0]  # token means of the per-token variances
    paper = -LN(LN(1 + vq[0] * vk[0]) + LN(1 + vq[1] * vk[1]))
    code = -LN(LN(1 + vq[0]) + LN(1 + vq[1]) + LN(1 + vk[0]) + LN(1 + vk[1]))
    assert entropy_loss(q, k, form="paper").item() == pytest.approx(paper, abs=1e-6)
    assert entropy_loss(q, k, form="code").item() == pytest.approx(code, abs=1e-6)
    assert paper != pytest.approx(code, abs=1e-2)
    # Variance is per token first: q head0 pooled over tokens would be 4.25, not 1.
    pooled = -LN(LN(1 + 4.25 * 1.0) + LN(1 + 2.0 * 5.0))
    assert entropy_loss(q, k, form="paper").item() != pytest.approx(pooled, abs=1e-2)


def test_entropy_loss_token_mask_and_sign():
    q, k = _hand_qk()
    mask = torch.tensor([[True, False]])
    expected = -LN(LN(1 + 1.0 * 1.0) + LN(1 + 4.0 * 9.0))
    assert entropy_loss(q, k, form="paper", token_mask=mask).item() == pytest.approx(expected, abs=1e-6)
    # Minimising must favour larger variance.
    for form in ("paper", "code"):
        assert entropy_loss(2 * q, 2 * k, form=form) < entropy_loss(q, k, form=form)
    assert torch.isfinite(entropy_loss(torch.zeros_like(q), torch.zeros_like(k)))


def test_entropy_loss_vectorised_matches_loop():
    torch.manual_seed(3)
    L, B, H, T, D = 3, 2, 4, 5, 8
    q, k = torch.randn(L, B, H, T, D), 2 * torch.randn(L, B, H, T, D)
    mask = torch.rand(B, T) > 0.3
    mask[:, 0] = True
    sp = sc = 0.0
    for l in range(L):
        for h in range(H):
            vq = torch.stack([q[l, b, h, i].var(unbiased=False) for b in range(B) for i in range(T) if mask[b, i]]).mean()
            vk = torch.stack([k[l, b, h, i].var(unbiased=False) for b in range(B) for i in range(T) if mask[b, i]]).mean()
            sp += torch.log(1 + vq * vk)
            sc += torch.log(1 + vq) + torch.log(1 + vk)
    assert entropy_loss(q, k, "paper", mask).item() == pytest.approx(-torch.log(sp).item(), rel=1e-5)
    assert entropy_loss(q, k, "code", mask).item() == pytest.approx(-torch.log(sc).item(), rel=1e-5)
    # list-of-layers input gives the same value
    assert entropy_loss(list(q), list(k), "code", mask).item() == pytest.approx(-torch.log(sc).item(), rel=1e-5)


# ----------------------------------------------------------------------------- distribution


def _hand_maps():
    a = torch.tensor([[1.0, 0.0], [0.5, 0.5]])  # student, [T=2, S=2]
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # teacher
    return a, b


def test_distribution_loss_closed_form():
    a, b = _hand_maps()
    # two heads: head 0 the hand maps, head 1 identical maps -> [L=1, B=1, H=2, T, S]
    s = torch.stack([a, b])[None, None]
    t = torch.stack([b, b])[None, None]
    row_cos = [1.0, 1.0 / math.sqrt(2), 1.0, 1.0]
    assert distribution_loss(s, t).item() == pytest.approx(1 - sum(row_cos) / 4, abs=1e-6)
    flat_cos_h0 = 1.5 / (math.sqrt(1.5) * math.sqrt(2.0))
    assert distribution_loss(s, t, form="paper").item() == pytest.approx(LN(flat_cos_h0 + 1.0), abs=1e-6)
    assert distribution_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)


def test_distribution_loss_all_zero_rows_are_finite_and_excluded():
    a, b = _hand_maps()
    pad = torch.zeros(1, 2)
    s = torch.cat([torch.cat([a, pad]), torch.zeros(3, 1)], 1)[None, None, None].requires_grad_(True)  # T=S=3
    t = torch.cat([torch.cat([b, pad]), torch.zeros(3, 1)], 1)[None, None, None]
    t[..., 2, 0] = 1.0  # teacher has mass on the padded row, student none: still excluded
    for form in ("corrected", "paper"):
        loss = distribution_loss(s, t, form=form)
        (g,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and torch.isfinite(g).all(), form
    assert distribution_loss(s, t).item() == pytest.approx(1 - (1 + 1 / math.sqrt(2)) / 2, abs=1e-6)
    z = torch.zeros(1, 1, 1, 3, 3, requires_grad=True)
    loss = distribution_loss(z, torch.zeros(1, 1, 1, 3, 3))
    (g,) = torch.autograd.grad(loss, z)
    assert loss.item() == 0.0 and torch.isfinite(g).all()


def test_distribution_loss_causal_flag_masks_future_keys():
    torch.manual_seed(4)
    s, t = torch.rand(1, 1, 2, 4, 4), torch.rand(1, 1, 2, 4, 4)
    keep = torch.ones(4, 4).tril().bool()
    masked = distribution_loss(s * keep, t * keep, causal=False)
    assert distribution_loss(s, t, causal=True).item() == pytest.approx(masked.item(), abs=1e-6)
    assert distribution_loss(s, t, causal=False).item() != pytest.approx(masked.item(), abs=1e-4)


def _causal_softmax(logits):
    T = logits.shape[-1]
    return logits.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)


def _mean_row_cos(s, t):
    return F.cosine_similarity(s, t, dim=-1).mean().item()


def test_one_sgd_step_corrected_raises_paper_lowers_similarity():
    torch.manual_seed(5)
    shape = (2, 2, 3, 6, 6)  # [L, B, H, T, S]
    teacher = _causal_softmax(torch.randn(shape)).detach()
    init = torch.randn(shape)
    before = _mean_row_cos(_causal_softmax(init), teacher)
    after = {}
    for form in ("corrected", "paper"):
        logits = torch.nn.Parameter(init.clone())
        opt = torch.optim.SGD([logits], lr=20.0)
        distribution_loss(_causal_softmax(logits), teacher, form=form).backward()
        opt.step()
        after[form] = _mean_row_cos(_causal_softmax(logits.detach()), teacher)
    assert after["corrected"] > before + 5e-3
    assert after["paper"] < before - 5e-3  # the paper's literal sign pushes the maps apart


def test_distribution_loss_vectorised_matches_loop():
    torch.manual_seed(6)
    L, B, H, T = 3, 2, 4, 5
    s = _causal_softmax(torch.randn(L, B, H, T, T))
    t = _causal_softmax(torch.randn(L, B, H, T, T))
    rows, paper_sum = [], 0.0
    for l in range(L):
        for h in range(H):
            per_b = []
            for b in range(B):
                for i in range(T):
                    rows.append(F.cosine_similarity(s[l, b, h, i], t[l, b, h, i], dim=0))
                per_b.append(F.cosine_similarity(s[l, b, h].flatten(), t[l, b, h].flatten(), dim=0))
            paper_sum += torch.stack(per_b).mean()
    assert distribution_loss(s, t).item() == pytest.approx(1 - torch.stack(rows).mean().item(), abs=1e-6)
    assert distribution_loss(s, t, form="paper").item() == pytest.approx(torch.log(paper_sum).item(), abs=1e-6)
    assert distribution_loss(list(s), list(t)).item() == pytest.approx(1 - torch.stack(rows).mean().item(), abs=1e-6)


# ----------------------------------------------------------------------------- total


def test_total_loss_weights_and_logs_terms():
    d = {"loss": torch.tensor(2.0), "ce": torch.tensor(3.0), "kl": torch.tensor(0.25)}
    out = total_loss(d, entropy=torch.tensor(-1.0), distribution=torch.tensor(0.5), r_entropy=0.5, r_distribution=1.0)
    assert out["loss"].item() == pytest.approx(2.0 - 0.5 + 0.5)
    assert {k: v.item() for k, v in out.items() if k != "loss"} == {
        "distill": 2.0, "ce": 3.0, "kl": 0.25, "entropy": -1.0, "distribution": 0.5,
    }
    only = total_loss(d)
    assert set(only) == {"loss", "distill", "ce", "kl"} and only["loss"].item() == 2.0


def test_bad_options_raise():
    x = torch.zeros(1, 1, 1, 2, 2)
    with pytest.raises(ValueError):
        distribution_loss(x, x, form="nope")
    with pytest.raises(ValueError):
        entropy_loss(x, x, form="nope")
    with pytest.raises(ValueError):
        distillation_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.long), direction="x")
