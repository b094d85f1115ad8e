"""Slow (-m slow, run in CI): real processes. kill -9 and the documented resume command, a killed sweep rerun,
2-process DDP against 1 process, the SLURM launcher's submitit executor run locally, and a 3-trial Optuna study."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from squat.train import run
from tests.conftest import ROOT, TINY, compose_cfg

pytestmark = pytest.mark.slow
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false",
           OMP_NUM_THREADS="1")
TRAIN = [sys.executable, "-m", "squat.train"]


def squat_train(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([*TRAIN, *args], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def kill_when(cmd: list[str], ready, timeout: float = 600) -> None:
    """Start ``cmd`` and kill -9 it as soon as ``ready()`` holds."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() - t0 < timeout
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


def weights(run_dir: Path) -> dict:
    return load_file(run_dir / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("teacher")
    run(compose_cfg(TINY + ["trainer.max_steps=30", "stage.lr=1e-2"], tmp))
    return tmp / "model"


def test_kill_9_after_the_first_checkpoint_then_the_documented_resume_command(tmp_path):
    args = TINY + ["trainer.max_steps=150", "trainer.val_check_interval=5", "stage.lr=1e-2", "torch_threads=1",
                   f"data.cache_dir={tmp_path / 'cache'}"]
    squat_train(*args, f"hydra.run.dir={tmp_path / 'whole'}")
    killed = tmp_path / "killed"
    kill_when([*TRAIN, *args, f"hydra.run.dir={killed}"], lambda: (killed / "checkpoints" / "last.ckpt").is_file())
    assert not (killed / "summary.json").exists()
    # the command the run printed at its start (its log), as a user would paste it
    line = next(l for f in killed.glob("*.log") for l in f.read_text().splitlines() if "resume with:" in l)
    cmd = shlex.split(line.split("resume with: ", 1)[1])
    assert cmd[0] == "squat-train" and "ckpt_path=last" in cmd
    proc = squat_train(*cmd[1:])
    summary = json.loads((killed / "summary.json").read_text())
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert 0 < summary["resumed_from_step"] < 150 and "resuming" in proc.stdout + proc.stderr
    assert summary["val_ppl_end"] == whole["val_ppl_end"] and summary["val_ppl_start"] == whole["val_ppl_start"]
    wa, wb = weights(tmp_path / "whole"), weights(killed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_killed_multirun_rerun_with_the_same_command_finishes_only_the_missing_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=1,2,3", *TINY, "trainer.max_steps=60", "trainer.val_check_interval=5", "torch_threads=1",
            f"hydra.sweep.dir={sweep}", f"data.cache_dir={tmp_path / 'cache'}"]
    jobs = [sweep / f"{i}-pretrain-fp-s{i + 1}" for i in range(3)]
    kill_when([*TRAIN, *args], lambda: (jobs[1] / "checkpoints" / "last.ckpt").is_file())
    assert (jobs[0] / "summary.json").is_file() and not (jobs[1] / "summary.json").exists()
    first = (jobs[0] / "summary.json").stat().st_mtime_ns
    proc = squat_train(*args)
    assert (jobs[0] / "summary.json").stat().st_mtime_ns == first  # finished: skipped
    assert "already finished" in proc.stdout + proc.stderr
    s1, s2 = (json.loads((j / "summary.json").read_text()) for j in jobs[1:])
    assert s1["resumed_from_step"] > 0 and "resumed_from_step" not in s2 and s1["steps"] == s2["steps"] == 60
    assert "seed=2" in yaml.safe_load((jobs[1] / ".hydra" / "overrides.yaml").read_text())


def _losses(run_dir: Path) -> pd.Series:
    m = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return m.dropna(subset=["train/loss"]).set_index("step")["train/loss"]


def test_two_ddp_processes_follow_one_process_with_the_same_global_batch(teacher, tmp_path):
    """2 CPU processes (gloo) with batch 4 each = 1 process with batch 8: same loss curve within float tolerance,
    same final weights; the teacher runs in both; metrics and the kernel benchmark are written once. LSQ with
    distillation, the loss every method shares: Squat's entropy term is computed over the whole batch, so with DDP
    each rank's share gives a slightly different value (3e-4 relative at step 0 here; docs/reliability.md)."""
    base = [o for o in TINY if "kernel_benchmark" not in o] + [
        "stage=qat", f"stage.teacher={teacher}", "quant=w4a4", "method=lsq", "trainer.max_steps=8",
        "trainer.val_check_interval=4", f"data.cache_dir={tmp_path / 'cache'}", "callbacks.kernel_benchmark.reps=1",
        "callbacks.kernel_benchmark.insn=false", "torch_threads=1",
        "trainer.limit_val_batches=null"]  # a batch limit applies per rank: each would see another part of the split
    squat_train(*base, "data.batch_size=8", f"hydra.run.dir={tmp_path / 'one'}")
    proc = squat_train(*base, "data.batch_size=4", "trainer.devices=2", "trainer.strategy=ddp",
                       f"hydra.run.dir={tmp_path / 'two'}")
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert two["processes"] == 2 and "processes" not in one
    l1, l2 = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(l1) == len(l2) == 8 and list(l2.index) == list(l1.index)  # one row per step: logged once
    assert ((l1 - l2).abs() < 1e-5 * l1.abs()).all(), pd.DataFrame({"one": l1, "two": l2})
    assert abs(one["val_ppl_end"] - two["val_ppl_end"]) < 1e-3 * one["val_ppl_end"]
    assert one["teacher_val_ppl"] == pytest.approx(two["teacher_val_ppl"], rel=1e-6)
    w1, w2 = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-4
    assert (proc.stdout + proc.stderr).count("KernelBenchmark: bit-exact") == 1


def test_token_policy_trains_under_ddp(teacher, tmp_path):
    squat_train(*TINY, "stage=qat", f"stage.teacher={teacher}", "quant=w4a4_8", "trainer.max_steps=4",
                "data.batch_size=4", "trainer.devices=2", "trainer.strategy=ddp", "torch_threads=1",
                f"hydra.run.dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}")
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["processes"] == 2 and 0.2 < s["low_bit_token_fraction"] < 0.9


def test_slurm_launcher_jobs_run_through_submitit_locally(teacher, tmp_path):
    sweep = tmp_path / "sweep"
    squat_train("-m", "launcher=local", "quant=w8a8,w4a4", "stage=qat", f"stage.teacher={teacher}", *TINY,
                f"hydra.sweep.dir={sweep}", f"data.cache_dir={tmp_path / 'cache'}", "torch_threads=1")
    done = sorted(p.parent.name for p in sweep.glob("*/summary.json"))
    assert done == ["0-qat-w8a8-squat-s1234", "1-qat-w4a4-squat-s1234"]
    assert list((sweep / ".submitit").glob("*/*_result.pkl"))  # each job ran as a submitit job


def test_optuna_sweeper_runs_a_three_trial_study(teacher, tmp_path):
    sweep = tmp_path / "sweep"
    squat_train("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "stage=qat", f"stage.teacher={teacher}",
                "quant=w4a4", *TINY, f"hydra.sweep.dir={sweep}", f"data.cache_dir={tmp_path / 'cache'}",
                "torch_threads=1")
    ppl = [json.loads(p.read_text())["val_ppl_end"] for p in sorted(sweep.glob("*/summary.json"))]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert len(ppl) == 3 and best["best_value"] == pytest.approx(min(ppl))
    trials = {tuple(yaml.safe_load((p / ".hydra" / "overrides.yaml").read_text())) for p in sweep.glob("[0-9]*")}
    assert len(trials) == 3  # three different trials
