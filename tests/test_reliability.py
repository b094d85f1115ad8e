"""Bad input and faults (docs/reliability.md): each fails before long work with a message that names the fix, or
the run survives it (resume, skip, offline fallback). Every row of the doc's table names its test here."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from safetensors.torch import load_file

from squat.config import CONF_DIR
from squat.utils import RunFolder, arg, to_typed
from tests.conftest import ROOT, TINY, compose_cfg


def fails(overrides: list[str], tmp_path: Path, *needles: str, config_name: str = "train") -> str:
    cfg = compose_cfg(overrides, tmp_path, config_name=config_name)
    with pytest.raises(Exception) as e:
        to_typed(cfg)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    return msg


# ---- numeric ranges: refused with the key, the value and the rule, quoting the command line -------------------
@pytest.mark.parametrize("overrides,needles", [
    (["method.r_entropy=-1"], ["method.r_entropy=-1.0 must be a number >= 0", "you wrote: method.r_entropy=-1"]),
    (["method.r_distribution=nan"], ["method.r_distribution=nan", ">= 0"]),
    (["stage.lr=nan"], ["stage.lr=nan must be a positive number"]),
    (["method.temperature=inf"], ["method.temperature=inf"]),
    (["stage.weight_decay=-0.1"], ["stage.weight_decay=-0.1"]),
    (["stage.betas=[0.9,1.5]"], ["stage.betas=[0.9, 1.5]", "[0, 1)"]),
    (["stage.warmup_steps=-5"], ["stage.warmup_steps=-5"]),
    (["stage.min_lr_ratio=2"], ["stage.min_lr_ratio=2.0"]),
    (["trainer.gradient_clip_val=nan"], ["trainer.gradient_clip_val=nan"]),
    (["trainer.limit_val_batches=0"], ["trainer.limit_val_batches=0.0", "validation runs before and after"]),
    (["trainer.precision=fp8"], ["trainer.precision='fp8' is not one of", "bf16-mixed"]),
    (["trainer.strategy=dpp"], ["trainer.strategy='dpp' is not a Lightning strategy", "ddp"]),
    (["trainer.devices=0"], ["trainer.devices=0 must be a positive integer"]),
    (["trainer.max_time=20min"], ["trainer.max_time='20min'", "DD:HH:MM:SS"]),
    (["seed=-1"], ["seed=-1 must lie in [0, 2^32)"]),
    (["data.num_workers=-1"], ["data.num_workers=-1"]),
    (["data.max_train_chars=0"], ["data.max_train_chars=0 must be a positive integer"]),
    (["data.teacher_samples.seed=-1"], ["data.teacher_samples.seed=-1 must be >= 0"]),
    (["model.num_layers=0"], ["model.num_layers=0"]),
])
def test_out_of_range_numbers_are_refused_at_compose_time(overrides, needles, tmp_path):
    fails(overrides, tmp_path, *needles)


def test_eval_numbers_are_refused(tmp_path):
    fails([f"model_path={tmp_path}", "blimp_max_pairs=0"], tmp_path, "blimp_max_pairs=0", config_name="eval")


# ---- names follow the bits ------------------------------------------------------------------------------------
def test_overridden_bits_rename_the_run(tmp_path):
    teacher = tmp_path / "t"
    teacher.mkdir()
    cfg = compose_cfg(["stage=qat", f"stage.teacher={teacher}", "quant=w4a4", "quant.weight_bits=3"], tmp_path)
    assert cfg.quant.name == "w3a4" and to_typed(cfg).quant.name == "w3a4"
    cfg = compose_cfg(["stage=qat", f"stage.teacher={teacher}", "quant=w4a4_8", "quant.token_policy.ratio=0.25"],
                      tmp_path)
    assert to_typed(cfg).quant.name == "w4a4_8_r25"
    for f in sorted((Path(CONF_DIR) / "quant").glob("*.yaml")):  # the presets' names are their bits' names
        cfg = compose_cfg(["stage=qat", f"stage.teacher={teacher}", f"quant={f.stem}"], tmp_path)
        assert to_typed(cfg).quant.name == f.stem


def test_a_hand_set_quant_name_is_refused(tmp_path):
    teacher = tmp_path / "t"
    teacher.mkdir()
    fails(["stage=qat", f"stage.teacher={teacher}", "quant=w4a4", "quant.name=best"], tmp_path,
          "quant.name='best' does not match the bits set, which make 'w4a4'")


def test_pretrain_with_bits_quotes_what_was_written(tmp_path):
    fails(["quant.weight_bits=3"], tmp_path, "quant.weight_bits=3 is set", "stage=qat")


# ---- sequence length, tokenizer, model paths ------------------------------------------------------------------
def test_seq_len_beyond_the_models_positions_names_both_numbers(tmp_path):
    fails(["data.seq_len=1024"], tmp_path, "data.seq_len=1024 exceeds the 512 positions", "model.max_position_embeddings")
    fails(["model=tiny_gpt2", "data.seq_len=600"], tmp_path, "data.seq_len=600 exceeds the 512 positions")
    teacher = tmp_path / "t"
    teacher.mkdir()
    (teacher / "config.json").write_text(json.dumps({"n_positions": 64}))
    fails(["stage=qat", f"stage.teacher={teacher}", "data.seq_len=128"], tmp_path,
          "data.seq_len=128 exceeds the 64 positions of the teacher")


def test_missing_tokenizer_path_names_the_key(tmp_path):
    fails(["data.tokenizer.path=/no/such/tokenizer"], tmp_path, "data.tokenizer.path='/no/such/tokenizer' is not a folder")


def test_qat_says_which_tokenizer_it_uses(tmp_path):
    teacher, other = tmp_path / "t", tmp_path / "o"
    teacher.mkdir()
    other.mkdir()
    fails(["stage=qat", f"stage.teacher={teacher}", f"data.tokenizer.path={other}"], tmp_path,
          "is not used by stage=qat", f"keeps its tokenizer (stage.teacher={teacher})")


def test_missing_pretrained_model_names_the_key(tmp_path):
    fails(["model=pretrained", "model.pretrained=/no/such/model"], tmp_path, "model.pretrained='/no/such/model'")


def test_resume_and_overwrite_together_are_refused(tmp_path):
    fails(["ckpt_path=last", "overwrite=true"], tmp_path, "choose one")


# ---- checkpoints ------------------------------------------------------------------------------------------------
def test_corrupt_checkpoint_is_named_without_unsafe_advice(tmp_path):
    from squat.train import check_checkpoint

    for content in (b"not a checkpoint at all", b"PK\x03\x04" + b"\x00" * 100):
        bad = tmp_path / "last.ckpt"
        bad.write_bytes(content)
        with pytest.raises(ValueError) as e:
            check_checkpoint(bad)
        assert str(bad) in str(e.value) and "weights_only" not in str(e.value) and "ckpt_path" in str(e.value)


# ---- BLiMP --------------------------------------------------------------------------------------------------------
def _pairs(n: int, tag: str) -> str:
    return "".join(json.dumps({"sentence_good": f"{tag} good {i}", "sentence_bad": f"{tag} bad {i}"}) + "\n"
                   for i in range(n))


def test_malformed_or_empty_blimp_files_are_named_by_file_and_line(tmp_path):
    from squat.eval.blimp import read_blimp

    (tmp_path / "a.jsonl").write_text(_pairs(3, "a") + '{"sentence_good": "x", \n')
    with pytest.raises(ValueError, match=r"a\.jsonl:4: not a JSON line"):
        read_blimp(tmp_path)
    (tmp_path / "a.jsonl").write_text(_pairs(3, "a"))
    (tmp_path / "b.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"b\.jsonl holds no BLiMP pairs"):
        read_blimp(tmp_path)
    (tmp_path / "b.jsonl").write_text('{"good": "x", "bad": "y"}\n')
    with pytest.raises(ValueError, match=r"b\.jsonl:1: needs string fields sentence_good"):
        read_blimp(tmp_path)


def test_a_malformed_blimp_file_for_the_in_run_evaluation_fails_before_training(tmp_path):
    from squat.callbacks import FinalEvaluation

    (tmp_path / "a.jsonl").write_text(_pairs(2, "a") + "oops\n")
    with pytest.raises(ValueError, match=r"a\.jsonl:3: not a JSON line"):
        FinalEvaluation(str(tmp_path / "out"), blimp_dir=str(tmp_path))


def test_blimp_subsample_spreads_over_the_file(tmp_path):
    """Files are ordered by paradigm: max_pairs=N takes N pairs evenly spaced, not the first N (one paradigm)."""
    from squat.eval.blimp import read_blimp

    (tmp_path / "p.jsonl").write_text(_pairs(100, "first") + _pairs(100, "second") + _pairs(100, "third"))
    rows = read_blimp(tmp_path, max_pairs=30)["p"]
    tags = [r["sentence_good"].split()[0] for r in rows]
    assert len(rows) == 30 and tags.count("first") == tags.count("second") == tags.count("third") == 10


def test_eval_json_is_written_before_blimp(tiny_run, tmp_path, monkeypatch):
    import squat.evaluate as ev

    out, _ = tiny_run
    (tmp_path / "blimp").mkdir()
    (tmp_path / "blimp" / "p.jsonl").write_text(_pairs(4, "a"))

    def broken(*a, **k):
        raise RuntimeError("BLiMP died")

    monkeypatch.setattr(ev, "evaluate_blimp", broken)
    cfg = compose_cfg([o for o in TINY if o.startswith("data.")] + [f"model_path={out / 'model'}", "max_batches=1",
                       "line_eval_max_lines=null", f"blimp_dir={tmp_path / 'blimp'}"], tmp_path / "eval",
                      config_name="eval")
    with pytest.raises(RuntimeError, match="BLiMP died"):
        ev.run_eval(to_typed(cfg))
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["val/ppl"] > 1


# ---- run folders: refuse, lock, writable, free space -----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from squat.train import run

    out = tmp_path_factory.mktemp("run")
    summary = run(compose_cfg(TINY, out))
    return out, summary


def test_same_run_folder_twice_is_refused_and_nothing_is_overwritten(tiny_run):
    from squat.train import run

    out, _ = tiny_run
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".lock"}
    with pytest.raises(FileExistsError) as e:
        run(compose_cfg(TINY + ["stage.lr=1e-2"], out))
    assert str(out) in str(e.value) and "ckpt_path=last" in str(e.value) and "overwrite=true" in str(e.value)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".lock"}
    assert after == before


def test_finished_run_resumed_again_is_skipped(tiny_run):
    from squat.train import run

    out, summary = tiny_run
    mtime = (out / "summary.json").stat().st_mtime_ns
    assert run(compose_cfg(TINY + ["ckpt_path=last"], out))["val_ppl_end"] == summary["val_ppl_end"]
    assert (out / "summary.json").stat().st_mtime_ns == mtime


def test_overwrite_starts_afresh(tiny_run, tmp_path):
    from squat.train import run

    out = tmp_path / "again"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_text("stale")
    assert run(compose_cfg(TINY + ["overwrite=true"], out))["status"] == "finished"
    assert (out / "checkpoints" / "last.ckpt").stat().st_size > 1000


def test_nothing_to_resume_is_named(tmp_path):
    from squat.train import run

    with pytest.raises(FileNotFoundError, match="holds no run to resume"):
        run(compose_cfg(TINY + ["ckpt_path=last"], tmp_path / "empty"))


def test_a_folder_in_use_by_another_run_fails_at_once(tmp_path):
    from squat.train import run

    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import filelock, sys, time; l = filelock.FileLock(sys.argv[1]); "
                               "l.acquire(); print('held', flush=True); time.sleep(60)", str(out / ".squat.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        with pytest.raises(RuntimeError, match=f"run folder {out} is in use by another squat run"):
            run(compose_cfg(TINY, out))
        assert time.time() - t0 < 10
        assert sorted(p.name for p in out.iterdir()) == [".squat.lock"]  # nothing written
    finally:
        holder.kill()


def test_unwritable_output_folder_fails_before_any_work(tmp_path):
    from squat.train import run

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OSError, match="is not writable"):
        run(compose_cfg(TINY, blocker / "out"))


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
    import shutil as sh

    from squat.train import run

    real = sh.disk_usage
    monkeypatch.setattr("squat.utils.shutil.disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(OSError, match="MiB free but this run writes about"):
        run(compose_cfg(TINY, tmp_path / "out"))
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_different_job_in_a_sweep_folder_is_refused(tmp_path):
    out = tmp_path / "job"
    (out / ".hydra").mkdir(parents=True)
    (out / ".hydra" / "overrides.yaml").write_text("- quant=w4a4\n- method=squat\n")
    (out / "csv").mkdir()
    folder = RunFolder(out, None, False)
    folder.multirun, folder.overrides = True, ["quant=w4a4", "method=pact"]
    with pytest.raises(FileExistsError, match=r"holds a different job: it was made by \[quant=w4a4 method=squat\]"):
        folder.claim()


def test_local_multirun_with_ddp_is_refused(tmp_path):
    from squat.train import check_launch

    rc = to_typed(compose_cfg(["trainer.devices=2", "trainer.strategy=ddp"], tmp_path))
    with pytest.raises(ValueError, match="launcher=slurm hydra.launcher.tasks_per_node=2"):
        check_launch(rc, multirun=True)
    check_launch(rc, multirun=False)


# ---- faults during training ----------------------------------------------------------------------------------
def test_nan_loss_stops_at_once_keeping_the_last_good_checkpoint(tmp_path):
    from squat.callbacks import NonFiniteLoss
    from squat.train import run

    out = tmp_path / "nan"
    cfg = compose_cfg(TINY + ["stage.lr=1e6", "stage.warmup_steps=0", "trainer.max_steps=30",
                              "trainer.val_check_interval=1"], out)
    with pytest.raises(NonFiniteLoss) as e:
        run(cfg)
    msg = str(e.value)
    assert "at step" in msg and "stage.lr=1e+06" in msg and "last good checkpoint" in msg, msg
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    assert not (out / "summary.json").exists() and not (out / "model").exists()


def test_resume_after_a_crash_gives_the_uninterrupted_weights_and_metrics(tmp_path, monkeypatch):
    """In-process stand-in for kill -9 (tests/test_scaleout.py kills a real process): a run dies at step 5 after its
    checkpoint at step 3; ``ckpt_path=last`` in its folder ends with the same weights and the same metrics.csv
    rows as an uninterrupted run of the same seed, and its start perplexity is the original start's."""
    import lightning as L

    import squat.train as tr

    ov = TINY + ["trainer.max_steps=8", "trainer.val_check_interval=3", "stage.lr=1e-2", "stage.warmup_steps=2"]
    a = tr.run(compose_cfg(ov, tmp_path / "a"))

    class Crash(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 5:
                raise RuntimeError("simulated crash")

    build = tr.build

    def crashing_build(rc, cfg):
        dm, lit, trainer = build(rc, cfg)
        trainer.callbacks.append(Crash())
        return dm, lit, trainer

    monkeypatch.setattr(tr, "build", crashing_build)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tr.run(compose_cfg(ov, tmp_path / "b"))
    monkeypatch.setattr(tr, "build", build)
    b = tr.run(compose_cfg(ov + ["ckpt_path=last"], tmp_path / "b"))
    assert b["resumed_from_step"] == 3 and b["val_ppl_start"] == a["val_ppl_start"]
    wa, wb = (load_file(tmp_path / x / "model" / "model.safetensors") for x in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = [sorted((tmp_path / x / "csv" / "metrics.csv").read_text().splitlines()) for x in "ab"]
    assert rows[0] == rows[1]


# ---- logging, generation, kernels ----------------------------------------------------------------------------
def test_unreachable_wandb_falls_back_to_offline_fast(monkeypatch, tmp_path, caplog):
    from squat.utils import instantiate_loggers

    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: refused at once
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_cfg(["logger=default"], tmp_path)
    cfg.logger.wandb.offline = False
    t0 = time.time()
    with caplog.at_level("WARNING", logger="squat"):
        loggers = instantiate_loggers(cfg.logger)
    wandb = [lg for lg in loggers if type(lg).__name__ == "WandbLogger"][0]
    assert wandb._offline and time.time() - t0 < 10
    assert "logger=csv" in caplog.text and "wandb sync" in caplog.text


def test_generate_with_an_empty_prompt_says_so():
    from squat.config import ModelConfig
    from squat.models import build_model
    from squat.quant.config import QuantConfig, TokenPolicyConfig
    from squat.quant.prepare import calibrate, quantize_model

    m = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), 300, 0,
                    attn_implementation="eager")
    quantize_model(m, QuantConfig(weight_bits=4, act_bits=4, probs_bits=8, token_policy=TokenPolicyConfig(enabled=True)))
    calibrate(m, torch.randint(0, 300, (2, 8)))
    with pytest.raises(ValueError, match="empty input.*eos_token_id"):
        m.eval().generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=2)


def test_kernel_summary_line_says_what_to_install():
    from squat.callbacks.kernel_benchmark import kernel_headline

    res = {"exactness": {"ok": True}, "insn_skipped": "aarch64 cross toolchain or qemu missing; install with: "
                                                     "apt-get install -y gcc-aarch64-linux-gnu qemu-user"}
    assert "apt-get install -y gcc-aarch64-linux-gnu qemu-user" in kernel_headline(res)


# ---- paths and folder names ------------------------------------------------------------------------------------
def test_run_folder_names_compose_without_warnings_and_paste_back(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    teacher = tmp_path / "t"
    teacher.mkdir()
    GlobalHydra.instance().clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=["stage=qat", f"stage.teacher={teacher}", "quant=w4a4_8_r25",
                                              "method=pact", "seed=7"], return_hydra_config=True)
            cfg.hydra.job.num = 3
            sub = OmegaConf.select(cfg, "hydra.sweep.subdir")
            run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    assert sub == "3-qat-w4a4_8_r25-pact-s7" and run_dir.endswith("-qat-w4a4_8_r25-pact-s7")
    job = f"outputs/multiruns/2025-01-02/03-04-05/{sub}/model"
    for word in (f"stage.teacher={job}", arg("model_path", "/a b/x,y=z/model")):
        parsed = OverridesParser.create().parse_overrides([subprocess.run(
            ["bash", "-c", f"printf %s {word}"], capture_output=True, text=True).stdout])[0]
        assert parsed.value() in (job, "/a b/x,y=z/model")


def test_squat_train_cli_exits_nonzero_on_nan(tmp_path):
    cmd = [sys.executable, "-m", "squat.train", *TINY, "stage.lr=1e6", "stage.warmup_steps=0", "trainer.max_steps=20",
           f"hydra.run.dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "NonFiniteLoss" in text and "stage.lr" in text, text[-2000:]


def test_reliability_doc_names_real_tests():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    table = [l for l in doc.splitlines() if l.startswith("| ") and l.split("|")[1].strip().isdigit()]
    assert len(table) >= 30
    defined = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    import re

    for name in set(re.findall(r"`(?:tests/\w+\.py::)?(test_\w+)`", doc)):
        assert f"def {name}(" in defined, f"docs/reliability.md names {name}, which no test defines"


def test_a_bad_value_in_a_later_sweep_job_fails_before_the_first_job(tmp_path):
    cmd = [sys.executable, "-m", "squat.train", "-m", "method.r_entropy=0.5,-1", *TINY,
           f"hydra.sweep.dir={tmp_path / 'sweep'}", f"data.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0 and "sweep job 1 of 2 (method.r_entropy=-1" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "sweep").exists()  # job 0 never started


def test_sweep_validation_resolves_the_default_wandb_logger(tmp_path):
    """The default logger's wandb group is ``${hydra:sweep.dir}``; validating job 0 must resolve it as the job
    would (it once failed with 'HydraConfig was not set', which stopped every multirun on the default logger)."""
    tiny = [o for o in TINY if not o.startswith("logger=")]
    cmd = [sys.executable, "-m", "squat.train", "-m", "stage.lr=1e-3,-1", *tiny,
           f"hydra.sweep.dir={tmp_path / 'sweep'}", f"data.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0 and "sweep job 1 of 2 (stage.lr=-1" in proc.stderr, proc.stderr[-2000:]
    assert "HydraConfig was not set" not in proc.stderr
