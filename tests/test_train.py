"""End-to-end training on the real embedded text, in seconds: loss falls, outputs and checkpoints reload."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from squat.data import TextDataModule
from squat.eval.perplexity import evaluate
from squat.train import run
from squat.utils import to_typed
from tests.conftest import compose_cfg


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    from tests.conftest import TINY

    overrides = TINY + ["trainer.max_steps=40", "trainer.val_check_interval=20", "stage.lr=1e-2", "stage.warmup_steps=5"]
    cfg = compose_cfg(overrides, tmp)
    summary = run(cfg)
    return tmp, summary


def test_short_pretrain_lowers_loss_and_writes_outputs(pretrain_run):
    out, summary = pretrain_run
    assert summary["steps"] == 40
    assert summary["val_ppl_end"] < 0.6 * summary["val_ppl_start"]
    metrics = pd.read_csv(out / "csv" / "metrics.csv")
    train = metrics["train/loss"].dropna().to_numpy()
    assert train[-5:].mean() < train[:5].mean() - 0.5
    assert metrics["val/bpb"].dropna().iloc[-1] > 0
    saved = json.loads((out / "summary.json").read_text())
    assert saved["val_ppl_end"] == pytest.approx(summary["val_ppl_end"])
    assert (out / "resolved_config.yaml").is_file() and (out / "checkpoints" / "last.ckpt").is_file()


def test_saved_model_and_tokenizer_reload_with_plain_transformers(pretrain_run):
    out, _ = pretrain_run
    model = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    ids = tok("The assert statement", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()


def test_checkpoint_reload_gives_identical_logits(pretrain_run, tmp_path):
    out, _ = pretrain_run
    from tests.conftest import TINY
    from squat.train import build
    from squat.utils import to_typed

    cfg = compose_cfg(TINY, tmp_path)
    dm, lit, _ = build(to_typed(cfg), cfg)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    lit.load_state_dict(ckpt["state_dict"])
    saved = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    lit.eval()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        assert torch.equal(lit(batch), saved(batch).logits)


def test_resume_from_checkpoint_continues_the_step_count(pretrain_run, tmp_path):
    out, _ = pretrain_run
    from tests.conftest import TINY

    cfg = compose_cfg(TINY + ["trainer.max_steps=44", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"], tmp_path)
    assert run(cfg)["steps"] == 44


def test_squat_eval_scores_babylm_domains_and_their_union(pretrain_run, tmp_path):
    from squat.evaluate import run_eval
    from squat.utils import to_typed

    out, _ = pretrain_run
    for d, files in {"tr": {"x.train": "the cat sat on the mat\n" * 50},
                     "dv": {"easy.dev": "the cat sat on the mat\n" * 40, "hard.dev": "zebra quartz jumps\n" * 40}}.items():
        (tmp_path / d).mkdir()
        for name, text in files.items():
            (tmp_path / d / name).write_text(text)
    cfg = compose_cfg(["data=babylm", f"data.train_dir={tmp_path / 'tr'}", f"data.dev_dir={tmp_path / 'dv'}",
                       "data.seq_len=16", f"model_path={out / 'model'}", "line_eval_max_lines=20"],
                      tmp_path / "eval", config_name="eval")
    res = run_eval(to_typed(cfg))
    assert res["val_easy/ppl"] < res["val/ppl"] < res["val_hard/ppl"]
    assert res["val_lines/lines"] == 20 and res["val_lines/bpb"] > 0


@pytest.mark.parametrize("interval", [3, 4])
def test_final_validation_is_reused_only_when_it_fell_on_the_last_step(tmp_path, monkeypatch, interval):
    """6 steps: validating every 3 ends on step 6, so the run's end metrics are that pass (start + 2 passes); every 4
    ends on step 4, so the run scores the split once more after fit (start + 1 + 1)."""
    from squat.lit_module import SquatLitModule
    from tests.conftest import TINY

    calls = []
    orig = SquatLitModule.on_validation_epoch_start
    monkeypatch.setattr(SquatLitModule, "on_validation_epoch_start", lambda self: (calls.append(1), orig(self))[1])
    overrides = TINY + ["trainer.max_steps=6", f"trainer.val_check_interval={interval}"]
    cfg = compose_cfg(overrides, tmp_path)
    summary = run(cfg)
    assert len(calls) == 3
    val = pd.read_csv(tmp_path / "csv" / "metrics.csv")["val/ppl"].dropna()
    assert summary["val_ppl_end"] == val.iloc[-1] and summary["steps"] == 6
    # the end metrics are the saved (final) model's, scored again outside the Trainer
    rc = to_typed(cfg)
    dm = TextDataModule(rc.data, tokenizer=AutoTokenizer.from_pretrained(tmp_path / "model"), seed=rc.seed).prepare()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    ref = evaluate(model, dm.val_dataloader(), dm.token_bytes, max_batches=rc.trainer.limit_val_batches)
    assert summary["val_ppl_end"] == pytest.approx(ref["ppl"], rel=1e-5)
