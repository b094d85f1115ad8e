"""Torch peers (squat.kernels.peers): the FP32 eager peer is the runtime's FP32 model (same export, same logits),
torch's int8 peer quantizes every linear, and every label gets tokens/s (values only, no timing asserted)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from squat.config import ModelConfig
from squat.export import export_model
from squat.models import build_model
from squat.quant.config import QuantConfig, TokenPolicyConfig
from squat.quant.prepare import calibrate, quantize_model


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def export(request, tmp_path_factory):
    """A tiny W4A4 student of either family, calibrated on random tokens, exported."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(family=request.param, hidden_size=32, num_layers=2, num_heads=2,
                                    intermediate_size=48), 96, 0, attn_implementation="eager")
    quantize_model(model, QuantConfig(name="w4a4", weight_bits=4, act_bits=4, probs_bits=8,
                                      token_policy=TokenPolicyConfig(enabled=False)), "lsq")
    calibrate(model, torch.randint(0, 96, (2, 24)))
    out = tmp_path_factory.mktemp(f"peers_{request.param}") / "export"
    export_model(model.eval(), out)
    return out


def test_fp32_eager_peer_is_the_runtime_fp32_model(lib, export):
    from squat.kernels.peers import float_model
    from squat.kernels.runtime import IntegerRuntime

    ids = torch.from_numpy(np.random.default_rng(1).integers(0, 96, 40))
    with torch.no_grad():
        want = float_model(export)(ids[None]).logits[0].numpy()
    got = IntegerRuntime(export, baseline="fp32").logits(ids)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


def test_int8_peer_quantizes_every_linear(export):
    from transformers.pytorch_utils import Conv1D

    from squat.kernels.peers import float_model, int8_dynamic

    fp = float_model(export)
    q = int8_dynamic(fp)
    mods = list(q.modules())
    assert not any(type(m) in (nn.Linear, Conv1D) for m in mods)
    assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in mods) == 2 * (4 if "gpt2" in str(export) else 7) + 1
    ids = torch.arange(20)[None]
    with torch.no_grad():
        a, b = fp(ids).logits, q(ids).logits
    assert torch.allclose(a, b, atol=0.1 * a.abs().max())  # int8 rounding only
    assert any(isinstance(m, (nn.Linear, Conv1D)) for m in fp.modules())  # the float peer is left as it was


def test_measure_gives_tokens_per_second_for_every_label(lib, export, tmp_path):
    from squat.kernels.peers import TORCH_FP32, TORCH_INT8, main

    assert main(["--export", str(export), "--prefill", "16", "--decode", "4", "--reps", "1", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "peers.json").read_text())["export"]
    assert {TORCH_FP32, TORCH_INT8, "runtime FP32", "runtime W4A4"} <= set(res["tok_s"])
    assert all(v["prefill"] > 0 and v["decode"] > 0 for v in res["tok_s"].values())
    assert all(len(s["decode"]) == 1 for s in res["seconds"].values())
    md = (tmp_path / "peers.md").read_text()
    assert "| runtime W4A4 |" in md and "runtime W4A4 decode" in md
    with pytest.raises(ValueError, match="positions"):
        main(["--export", str(export), "--prefill", "600", "--out", str(tmp_path)])
