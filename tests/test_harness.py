"""lm-evaluation-harness adapter: any squat model, float or fake-quantized, evaluated in memory; BLiMP through the
harness's multiple-choice machinery equals squat-eval's own BLiMP."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from squat.config import ModelConfig
from squat.data import TextDataModule
from squat.eval.blimp import evaluate_blimp
from squat.models import build_model
from squat.quant.config import QuantConfig, TokenPolicyConfig
from squat.quant.prepare import calibrate, quantize_model
from squat.utils import to_typed
from tests.conftest import TINY, compose_cfg

pytest.importorskip("lm_eval", reason='optional extra: pip install -e ".[lmeval]"')
from squat.eval.harness import harness_blimp  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tok")
    return TextDataModule(to_typed(compose_cfg([o for o in TINY if o.startswith("data.")], tmp)).data).prepare().tokenizer


def _pairs(dir_, n_files=2, n=40, seed=0):
    """BLiMP-format files from the embedded text: a word window and a shuffle of it (no identical pair)."""
    from pydoc_data.topics import topics

    words = " ".join(topics["while"].split() + topics["if"].split()).split(" ")
    rng = np.random.default_rng(seed)
    for f in range(n_files):
        rows = []
        while len(rows) < n:
            i, k = int(rng.integers(0, len(words) - 16)), int(rng.integers(3, 14))
            good = words[i : i + k]
            bad = list(good)
            rng.shuffle(bad)
            if bad != good:
                rows.append({"sentence_good": " ".join(good), "sentence_bad": " ".join(bad)})
        (dir_ / f"phenomenon_{f}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return dir_


@pytest.mark.parametrize("qcfg", [QuantConfig(name="fp"),
                                  QuantConfig(name="w4a4_8", weight_bits=4, act_bits=4, probs_bits=8,
                                              token_policy=TokenPolicyConfig(enabled=True))], ids=lambda c: c.name)
def test_harness_blimp_equals_squat_eval_blimp(tokenizer, tmp_path, qcfg):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128),
                        len(tokenizer), tokenizer.eos_token_id, attn_implementation="eager")
    if not qcfg.is_float:
        quantize_model(model, qcfg)
        calibrate(model, torch.randint(0, len(tokenizer), (4, 32)))
    model.eval()
    blimp = _pairs(tmp_path / "blimp" if (tmp_path / "blimp").mkdir() is None else tmp_path)
    ours = evaluate_blimp(model, tokenizer, blimp)
    theirs = harness_blimp(model, tokenizer, blimp, tmp_path / "tasks")
    assert set(ours) == set(theirs) == {"phenomenon_0", "phenomenon_1", "average"}
    assert theirs == pytest.approx(ours, abs=1e-9) and 0 < ours["average"] < 100
