"""The KernelBenchmark callback after fit, on a tiny trained-like student: the whole-model table through the integer
runtime lands in kernel_bench.md/json, the logger and the headline, and no failure reaches the training run."""
from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from lightning.pytorch.loggers import CSVLogger

from squat.callbacks.kernel_benchmark import KernelBenchmark, kernel_headline
from squat.config import ModelConfig
from squat.models import build_model
from squat.quant.config import QuantConfig, TokenPolicyConfig
from squat.quant.prepare import calibrate, quantize_model

SEQ = 16


class _Module(nn.Module):  # what the callback uses of the LightningModule: .student, forward, .device
    def __init__(self, student):
        super().__init__()
        self.student = student
        self.device = torch.device("cpu")

    def forward(self, ids):
        return self.student(ids)


def _fit_end(tmp_path, caplog):
    torch.manual_seed(0)
    student = build_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=48), 96, 0,
                          attn_implementation="eager")
    quantize_model(student, QuantConfig(name="w4a4_8", weight_bits=4, act_bits=4, probs_bits=8,
                                        token_policy=TokenPolicyConfig(enabled=True)), "lsq")
    calibrate(student, torch.randint(0, 96, (2, SEQ)))
    logger = CSVLogger(tmp_path, name="csv", version="")
    val = [torch.randint(0, 96, (2, SEQ))]
    trainer = SimpleNamespace(is_global_zero=True, global_step=3, loggers=[logger],
                              datamodule=SimpleNamespace(cfg=SimpleNamespace(seq_len=SEQ), val_dataloader=lambda: val))
    cb = KernelBenchmark(str(tmp_path), reps=1, insn=False)
    with caplog.at_level(logging.INFO, logger="squat"):
        cb.on_fit_end(trainer, _Module(student))
    return cb, (tmp_path / "csv" / "metrics.csv").read_text() if (tmp_path / "csv" / "metrics.csv").exists() else ""


def test_callback_reports_the_whole_model(lib, tmp_path, caplog):
    cb, metrics = _fit_end(tmp_path, caplog)
    res = cb.result
    assert res["exactness"]["ok"] and "whole_model" in res, res.get("whole_model_error")
    own = "mixed W4 A4:8, ratio 0.5"
    wall = res["whole_model"]["wall"]
    assert own in wall and "FP32" in wall and all(v["prefill"] > 0 and v["decode"] > 0 for v in wall.values() if v)
    md = (tmp_path / "kernel_bench.md").read_text()
    assert "Whole model" in md and f"| {own} |" in md
    assert "whole_model" in json.loads((tmp_path / "kernel_bench.json").read_text())
    assert "kernel/whole_host_ms_per_token_decode/model" in metrics and "kernel/whole_host_ms_per_token_decode/FP32" in metrics
    assert ("kernel/whole_host_ms_per_token_decode/FP16" in metrics) == (wall["FP16"] is not None)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("KernelBenchmark: bit-exact"))
    assert f"whole model {own} vs runtime FP32 (host ms/token, prefill {SEQ}): prefill" in line and "\n" not in line
    assert f"whole model {own} vs runtime" in kernel_headline(res)


def test_a_failing_runtime_never_fails_the_run(lib, tmp_path, caplog, monkeypatch):
    from squat.kernels import runtime_bench

    def broken(*a, **k):
        raise RuntimeError("runtime build failed")

    monkeypatch.setattr(runtime_bench, "measure", broken, raising=False)
    cb, _ = _fit_end(tmp_path / "a", caplog)
    assert cb.result["whole_model_error"] == "RuntimeError: runtime build failed" and cb.result["exactness"]["ok"]
    assert "not measured (RuntimeError: runtime build failed)" in (tmp_path / "a" / "kernel_bench.md").read_text()
    assert "whole model not measured" in kernel_headline(cb.result)

    monkeypatch.setattr("squat.kernels.bench.run_kernel_benchmark", broken)
    cb, _ = _fit_end(tmp_path / "b", caplog)
    assert cb.result is None and "KernelBenchmark failed" in caplog.text


@pytest.mark.parametrize("bad", [{"whole_model": {"wall": {"W4A4": {"prefill": 1.0}}}},
                                 {"whole_model": {"insn": {"max": {"W4A4": None, "FP16": 3}}}}])
def test_headline_survives_an_unexpected_whole_model_result(bad):
    assert kernel_headline({"exactness": {"ok": True}, **bad}).startswith("bit-exact PASS")


def test_after_training_the_whole_model_table_is_the_cheap_one():
    assert KernelBenchmark("x").whole_model_options(128) == {"prefill": 32, "cpus": ["cortex-a76"]}
    assert KernelBenchmark("x").whole_model_options(16)["prefill"] == 16
