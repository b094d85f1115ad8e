"""Insertion into HF LLaMA and GPT-2: identity when off, close at 8 bits, gradients everywhere, token policy
wiring, generation, save/load, and the integer export reproducing the fake-quant model."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from squat.config import ModelConfig
from squat.export import ExportedModel, export_model, integer_reference
from squat.models import build_model
from squat.quant.attention import AttentionQuantizers
from squat.quant.config import QuantConfig, SitesConfig, TokenPolicyConfig
from squat.quant.linear import QuantLinear
from squat.quant.quantizers import LSQPlusActQuantizer
from squat.quant.prepare import calibrate, load_quantized, quant_linears, quantize_model, save_quantized
from squat.quant.token_policy import TokenAdaptiveQuantizer

FAMILIES = ["llama", "gpt2"]
W8A8 = QuantConfig(name="w8a8", weight_bits=8, act_bits=8, probs_bits=8)
W4A4 = QuantConfig(name="w4a4", weight_bits=4, act_bits=4, probs_bits=8)
MIXED = QuantConfig(name="w4a4_8", weight_bits=4, act_bits=4, probs_bits=8, token_policy=TokenPolicyConfig(enabled=True, ratio=0.5))


def tiny(family: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(family=family, hidden_size=64, num_layers=3, num_heads=4, intermediate_size=128)
    return build_model(cfg, 200, 0, attn_implementation="eager").eval()


@pytest.fixture
def ids():
    torch.manual_seed(1)
    return torch.randint(0, 200, (2, 24))


@pytest.mark.parametrize("family", FAMILIES)
def test_all_quantizers_off_is_bit_identical(family, ids):
    ref = tiny(family)
    model = copy.deepcopy(ref)
    off = QuantConfig(name="off", sites=SitesConfig(**{f: True for f in SitesConfig.__dataclass_fields__}))
    quantize_model(model, off)
    assert len(quant_linears(model)) == (7 if family == "llama" else 4) * 3
    assert model.config._attn_implementation == "squat"
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_norms_and_activations_are_float64_rounded_once_training_untouched(family):
    """The runtime's arithmetic (squat.quant.exact_ops) replaces the norms' and the MLP activation's eval output only."""
    ref = tiny(family)
    torch.manual_seed(2)
    for p in ref.parameters():
        if p.dim() == 1:
            p.data.uniform_(0.5, 1.5)  # norm weights (and GPT-2 biases) away from their initial ones
    model = copy.deepcopy(ref)
    quantize_model(model, W4A4)
    block, ref_block = (model.model.layers[0], ref.model.layers[0]) if family == "llama" else (model.transformer.h[0], ref.transformer.h[0])
    norm, ref_norm = (block.input_layernorm, ref_block.input_layernorm) if family == "llama" else (block.ln_1, ref_block.ln_1)
    act, ref_act = (block.mlp.act_fn, ref_block.mlp.act_fn) if family == "llama" else (block.mlp.act, ref_block.mlp.act)
    x = torch.randn(3, 7, 64) * 3
    with torch.no_grad():
        model.train()
        assert torch.equal(norm(x), ref_norm.train()(x)) and torch.equal(act(x), ref_act(x))
        model.eval()
        x64 = x.double()
        if family == "llama":
            r = 1.0 / torch.sqrt((x64 * x64).mean(-1, keepdim=True) + float(torch.tensor(norm.variance_epsilon).float()))
            want = norm.weight * (x64 * r).float()
            want_act = (x64 / (1 + torch.exp(-x64))).float()
        else:
            d = x64 - x64.mean(-1, keepdim=True)
            r = 1.0 / torch.sqrt((d * d).mean(-1, keepdim=True) + float(torch.tensor(norm.eps).float()))
            want = (d * r).float() * norm.weight + norm.bias
            want_act = (0.5 * x64 * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x64 + 0.044715 * x64 ** 3)))).float()
        assert torch.equal(norm(x), want)
        assert (act(x) - want_act).abs().max() <= 1e-6 * want_act.abs().max()  # another float64 tanh: an ulp at most
        assert not torch.equal(norm(x), ref_norm.train()(x))  # float32 statistics differ in the last bits


def _rel_drift(ref, qcfg, method, ids) -> float:
    model = copy.deepcopy(ref)
    quantize_model(model, qcfg, method)
    calibrate(model, ids)
    with torch.no_grad():
        a, b = model.eval()(ids).logits, ref(ids).logits
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("family", FAMILIES)
def test_w8a8_stays_close(family, ids):
    ref = tiny(family)
    # Min-max 8-bit (LLM-QAT) resolves ~1/255 of each range: logits within 2% (relative L2).
    assert _rel_drift(ref, W8A8, "llmqat", ids) < 0.02
    # LSQ's spec init (s = 2 mean|x| / sqrt(qmax)) is coarse at 8 bits until QAT tunes it: within 12%.
    rel8 = _rel_drift(ref, W8A8, "lsq", ids)
    assert rel8 < 0.12
    # 4-bit is clearly worse than 8-bit: the quantizers really act
    assert _rel_drift(ref, W4A4, "lsq", ids) > 2 * rel8


def test_llama_sites_match_the_spec():
    model = tiny("llama")
    quantize_model(model, W4A4)
    layer = model.model.layers[1]
    a = layer.self_attn
    assert a.q_proj.act_quant is a.k_proj.act_quant is a.v_proj.act_quant  # one quantized attention input
    assert layer.mlp.gate_proj.act_quant is layer.mlp.up_proj.act_quant
    assert layer.mlp.down_proj.act_quant is not layer.mlp.up_proj.act_quant
    assert a.o_proj.act_quant is not a.q_proj.act_quant and a.o_proj.act_quant.bits == 4  # o_proj's own input site
    assert a.o_proj.weight_quant.bits == 4
    aq = a.attn_quant
    assert isinstance(aq, AttentionQuantizers) and aq.q.bits == aq.k.bits == aq.v.bits == 4
    assert aq.probs.bits == 8 and aq.probs.signed is False
    assert not isinstance(model.lm_head, QuantLinear)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["lsq", "pact", "nipq", "llmqat"])
def test_gradients_reach_every_quantizer_parameter(family, method, ids):
    model = tiny(family)
    quantize_model(model, MIXED if method == "lsq" else W4A4, method)
    calibrate(model, ids)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    params = {n: p for n, p in model.named_parameters() if "_quant" in n}
    if method == "llmqat":
        assert not params  # min-max: nothing learned
        return
    assert params
    # Every parameter is in the graph. LSQ steps, NIPQ clips (noise reaches every element) and PACT clips (weights
    # start at their MSE-optimal clip, so some clip) get a non-zero gradient; an LSQ+ offset only moves the clip
    # window, so it gets gradient from clipped values alone (zero where nothing clips).
    assert not [n for n, p in params.items() if p.grad is None]
    clip_only = [n for n in params if n.endswith(".beta")]
    dead = [n for n, p in params.items() if n not in clip_only and p.grad.abs().sum() == 0]
    assert not dead, f"no gradient: {dead[:5]}"
    if clip_only:  # nothing may clip in a fresh model (the gradient is then exactly 0): make one site clip
        site = next(m for m in model.modules() if isinstance(m, LSQPlusActQuantizer) and m.signed)
        with torch.no_grad():
            site.s.mul_(0.02)
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        assert site.beta.grad.abs().sum() > 1e-8


def test_token_policy_propagates_into_the_next_layer(ids):
    model = tiny("llama")
    h = quantize_model(model, MIXED)
    calibrate(model, ids)
    layers = model.model.layers
    # layer 0 input, q and k are all high precision: plain 8-bit quantizers, no low branch
    assert not isinstance(layers[0].self_attn.q_proj.act_quant, TokenAdaptiveQuantizer)
    assert layers[0].self_attn.attn_quant.q.bits == 8 and layers[0].self_attn.attn_quant.k.bits == 8
    q1 = layers[1].self_attn.q_proj.act_quant
    assert isinstance(q1, TokenAdaptiveQuantizer) and q1.which == "input" and q1.layer == 1
    with torch.no_grad():
        model.eval()(ids)
    st = h.state
    for l in range(3):  # the calibration batch itself: the threshold admits half of its 48 tokens (calibrated in
        assert abs(int(st.output_mask(l).sum()) - 24) <= 1  # training's float matmuls; eval's exact ones may move one)
    assert torch.equal(st.input_mask(1), st.output_mask(0)) and torch.equal(st.key_mask(2), st.value_mask(1))
    assert st.input_mask(0) is None
    # the next layer's input really is quantized per token by that mask
    x = torch.randn(2, 24, 64)
    y = q1(x)
    hi, lo = q1.high(x), q1.low(x)
    m = st.output_mask(0)
    assert torch.equal(y[m], hi[m]) and torch.equal(y[~m], lo[~m])
    assert float(st.low_fraction()) == pytest.approx(0.5, abs=1 / 48)


def test_topk_rule_prefill_takes_the_exact_ratio_and_decodes_incrementally(ids):
    model = tiny("llama")
    cfg = QuantConfig(name="topk", weight_bits=4, act_bits=4, probs_bits=8,
                      token_policy=TokenPolicyConfig(enabled=True, ratio=0.5, rule="topk"))
    h = quantize_model(model, cfg)
    calibrate(model, ids)
    prompt = ids[:, :8]
    out = model.eval().generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False)
    assert out.shape == (2, 18)
    st = h.state
    assert st.value_mask(1).shape == (2, 17)  # prompt + 9 decoded tokens carry a precision each
    assert st.value_mask(1)[:, :8].sum(-1).tolist() == [4, 4]  # prefill: exact ratio


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_quantized_student(family, ids, tmp_path):
    model = tiny(family)
    quantize_model(model, MIXED if family == "llama" else W4A4)
    calibrate(model, ids)
    model.eval()
    save_quantized(model, tmp_path)
    loaded = load_quantized(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("qcfg", [W8A8, QuantConfig(name="w4a8", weight_bits=4, act_bits=8, probs_bits=8), W4A4, MIXED], ids=lambda c: c.name)
def test_export_round_trip_and_integer_linears(family, qcfg, ids, tmp_path):
    model = tiny(family)
    quantize_model(model, qcfg)
    calibrate(model, ids)
    model.eval()
    manifest = export_model(model, tmp_path)
    exp = ExportedModel(tmp_path)
    assert exp.manifest == json.loads(json.dumps(manifest, default=str)) and len(exp.linears) == len(quant_linears(model))
    ref = integer_reference(model, tmp_path)
    for name, lin in quant_linears(model).items():
        e = exp.linears[name]
        q = e.w
        assert q.dtype == torch.int8 and q.shape == (e.out_features, e.in_features)
        if qcfg.weight_bits == 4:
            assert exp.tensors[f"{name}.weight_q"].dtype == torch.uint8 and q.min() >= -8 and q.max() <= 7
        w_hat = q.float() * e.w_scale.view(-1, 1)
        assert torch.equal(w_hat, lin.quantized_weight_nk().detach())
    # each integer linear, given the same input, reproduces its fake-quant linear
    with torch.no_grad():
        model(ids)  # each fills its own token state with the same precisions
        ref(ids)
        for name, lin in quant_linears(model).items():
            x = torch.randn(2, 24, lin.in_features)
            a, b = lin(x), ref.get_submodule(name)(x)
            assert ((a - b).norm() / a.norm()) < 1e-5, name


@pytest.mark.parametrize("select,score", [("batch", "probs"), ("per_sample", "logits"), ("batch", "logits")])
def test_public_code_token_policy_variants(select, score, ids):
    model = tiny("llama")
    cfg = QuantConfig(name="v", weight_bits=4, act_bits=4, probs_bits=8,
                      token_policy=TokenPolicyConfig(enabled=True, ratio=0.25, rule="topk", select=select, score=score))
    h = quantize_model(model, cfg)
    calibrate(model, ids)
    with torch.no_grad():
        model.eval()(ids)
    m = h.state.output_mask(1)
    assert m.sum(-1).tolist() == [6, 6]  # round(0.25 * 24) per sample either way
    if select == "batch":
        assert torch.equal(m[0], m[1])  # one index set shared across the batch
