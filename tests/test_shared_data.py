"""Opt-in (-m data): the real BabyLM text and BLiMP pairs from ../shared/data, skipped where absent."""
from __future__ import annotations

import pytest
import torch

from squat.config import ModelConfig
from squat.data import TextDataModule
from squat.eval.blimp import evaluate_blimp, sentence_logprobs
from squat.models import build_model
from squat.utils import to_typed
from tests.conftest import compose_cfg

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def babylm(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("babylm")
    cfg = compose_cfg(["data=babylm", f"data.train_dir={shared_data / 'babylm_10M_partial'}",
                       f"data.dev_dir={shared_data / 'babylm_dev_partial'}"], tmp)
    return TextDataModule(to_typed(cfg).data).prepare()


def test_babylm_tokenizes_all_domains(babylm, shared_data):
    s = babylm.summary()
    assert s["vocab_size"] == 8000
    assert 1.5e6 < s["train_tokens"] < 3e6 and 1e6 < s["val_tokens"] < 2.5e6
    lines = sum(1 for f in (shared_data / "babylm_10M_partial").glob("*.train")
                for line in f.read_text(encoding="utf-8").splitlines() if line.strip())
    assert list(babylm.train_tokens).count(babylm.tokenizer.eos_token_id) == lines  # data.eos_after=line
    bpt = float(babylm.token_bytes[torch.from_numpy(babylm.val_tokens[:100000].astype("int64"))].mean())
    assert 3.0 < bpt < 6.0  # bytes per token of an 8000-token BPE on English


def test_blimp_scores_every_phenomenon(babylm, shared_data):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128),
                        babylm.vocab_size, babylm.tokenizer.eos_token_id).eval()
    acc = evaluate_blimp(model, babylm.tokenizer, shared_data / "blimp_filtered_sample", max_pairs=20)
    assert len(acc) == 13 and all(0 <= v <= 100 for v in acc.values())
    lp = sentence_logprobs(model, babylm.tokenizer, ["The cat sleeps.", "The cat sleeps."])
    assert lp[0] == lp[1] and lp[0] < 0


def test_harness_blimp_equals_squat_eval_on_the_shared_sample(babylm, shared_data, tmp_path):
    """BLiMP through lm-evaluation-harness (a local task definition, no hub) gives squat-eval's accuracy, per
    phenomenon, on the whole shared sample, for a fake-quantized W4 A4:8 student."""
    pytest.importorskip("lm_eval", reason='optional extra: pip install -e ".[lmeval]"')
    from squat.eval.harness import harness_blimp
    from squat.quant.config import QuantConfig, TokenPolicyConfig
    from squat.quant.prepare import calibrate, quantize_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128),
                        babylm.vocab_size, babylm.tokenizer.eos_token_id, attn_implementation="eager")
    quantize_model(model, QuantConfig(name="w4a4_8", weight_bits=4, act_bits=4, probs_bits=8,
                                      token_policy=TokenPolicyConfig(enabled=True)))
    calibrate(model, torch.from_numpy(babylm.train_tokens[: 8 * 64].astype("int64")).view(8, 64))
    model.eval()
    ours = evaluate_blimp(model, babylm.tokenizer, shared_data / "blimp_filtered_sample")
    theirs = harness_blimp(model, babylm.tokenizer, shared_data / "blimp_filtered_sample", tmp_path / "tasks")
    assert len(ours) == 13 and theirs == pytest.approx(ours, abs=1e-9)
