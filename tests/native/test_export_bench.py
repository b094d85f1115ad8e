"""The kernel path reads the export through squat.export.ExportedModel: every width exports, runs on the kernels
equal to the integer reference, and run_kernel_benchmark / squat-bench --export work on a real export."""
import json

import numpy as np
import pytest
import torch

from squat.config import ModelConfig
from squat.export import ExportedModel, IntegerLinear, export_model
from squat.models import build_model
from squat.quant.config import QuantConfig, TokenPolicyConfig
from squat.quant.prepare import calibrate, quantize_model


def _student(tmp_path, weight_bits: int, act_bits: int, mixed: bool = False):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=48), 96, 0,
                        attn_implementation="eager")
    qcfg = QuantConfig(name=f"w{weight_bits}a{act_bits}", weight_bits=weight_bits, act_bits=act_bits, probs_bits=8,
                       token_policy=TokenPolicyConfig(enabled=mixed))
    quantize_model(model, qcfg)
    ids = torch.randint(0, 96, (2, 24))
    calibrate(model, ids)
    export_model(model.eval(), tmp_path / "export")
    return model, ids, tmp_path / "export"


@pytest.mark.parametrize("wb,ab", [(2, 8), (3, 8), (4, 4), (4, 8), (6, 6), (8, 8)])
def test_every_width_runs_on_the_kernels_equal_to_the_integer_reference(lib, tmp_path, wb, ab):
    from squat.kernels.model import KernelLinear

    _, _, d = _student(tmp_path, wb, ab)
    exp = ExportedModel(d)
    assert {e["packing"] for e in exp.manifest["linears"].values()} == {"int4x2" if wb <= 4 else "int8"}
    x = np.random.default_rng(2).standard_normal((7, 32)).astype(np.float32)
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.gate_proj"):
        lin = exp.linears[name]
        assert lin.w.min() >= -(2 ** (wb - 1)) and lin.w.max() <= 2 ** (wb - 1) - 1
        got = KernelLinear(lib, lin)(x)
        ref = IntegerLinear(lin)(torch.from_numpy(x)).numpy()  # float64 integer math, then rounded to float32
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
        q, _ = lin.act.quantize(torch.from_numpy(x))
        acc = lib.matmul(q.numpy().astype(np.int8), lib.pack_weights(KernelLinear(lib, lin).paths["low"][1].kernel, lin.w.numpy()))
        assert np.array_equal(acc, (q.long() @ lin.w.long().T).numpy())  # the integer GEMM itself: exact


def test_adaptive_input_runs_two_groups_with_the_trained_scales(lib, tmp_path):
    from squat.kernels.model import KernelLinear

    _, _, d = _student(tmp_path, 4, 4, mixed=True)
    lin = ExportedModel(d).linears["model.layers.1.mlp.gate_proj"]
    assert lin.act.adaptive == "output" and lin.act.high.bits == 8
    x = np.random.default_rng(3).standard_normal((9, 32)).astype(np.float32)
    high = np.arange(9) % 3 == 0
    got = KernelLinear(lib, lin)(x, high)
    ref = IntegerLinear(lin)
    state = type("S", (), {"output_mask": lambda self, layer: torch.from_numpy(high)[None]})()
    object.__setattr__(ref, "state", state)
    ref.layer = 1
    np.testing.assert_allclose(got, ref(torch.from_numpy(x)[None])[0].numpy(), rtol=1e-5, atol=1e-6)


def test_run_kernel_benchmark_on_a_real_export(lib, tmp_path):
    from squat.kernels.bench import run_kernel_benchmark

    model, ids, d = _student(tmp_path, 4, 8)
    acts = {"model.layers.0.self_attn.q_proj": np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)}
    res = run_kernel_benchmark(d, seq_len=8, ratio=0.5, out_dir=tmp_path / "out", check_activations=acts, reps=1,
                               insn=False)
    assert res["exactness"]["ok"] and res["exactness"]["checked"] > 0
    assert set(res["ms_per_token"]) == {"8", "1"} and "torch int8 dynamic" in res["ms_per_token"]["8"]
    assert (tmp_path / "out" / "kernel_bench.md").read_text().count("Wall clock") == 2
    json.loads((tmp_path / "out" / "kernel_bench.json").read_text())


def test_kernel_headline_is_rederived_from_the_honest_rows():
    from squat.callbacks.kernel_benchmark import kernel_headline

    res = {"exactness": {"ok": True},
           "insn_per_token": {"cortex-a76": {"128": {"FP16": 5.7, "W8A8": 3.1, "W4A4": 3.17},
                                             "1": {"FP16": 6.7, "W8A8": 3.7, "W4A4": 4.7}}}}
    h = kernel_headline(res)
    assert h.startswith("bit-exact PASS; vs FP16, quantization counted: cortex-a76 prefill M=128: W8A8 1.84x")
    assert "cortex-a76 decode M=1: W8A8 1.81x, W4A4 1.43x" in h
    assert "no qemu" in kernel_headline({"exactness": {"ok": False}})


def test_squat_bench_export_adds_the_whole_model_table(lib, tmp_path):
    """The trained model's own variant beside the runtime's FP16 and FP32 baselines of the same weights."""
    from squat.kernels.bench import main

    _, _, d = _student(tmp_path, 4, 8)
    assert main(["--export", str(d), "-M", "8", "--reps", "1", "--no-insn", "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "kernel_bench.json").read_text())
    assert "whole_model_error" not in res, res.get("whole_model_error")
    wall = res["whole_model"]["wall"]
    assert set(wall) == {"FP16", "FP32", "W4A8"} and all(v["prefill"] > 0 and v["decode"] > 0 for v in wall.values() if v)
    assert wall["W4A8"] and wall["FP32"]  # FP16 is not timed where SIMDe emulates it
    md = (tmp_path / "out" / "kernel_bench.md").read_text()
    assert "Whole model, host ms per token" in md and "| W4A8 |" in md and "| FP16 |" in md
    assert md.count("Wall clock") == 2  # the GEMM tables stay
