"""CI-sized multiruns of the paper's experiments, then squat-report on their outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from squat.report import report
from squat.train import run
from tests.conftest import TINY, compose_cfg


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("teacher")
    run(compose_cfg(TINY + ["trainer.max_steps=30", "stage.lr=1e-2"], tmp))
    return tmp / "model"


def multirun(experiment: str, teacher: Path, sweep_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "squat.train", "-m", f"experiment={experiment}", f"stage.teacher={teacher}",
           f"hydra.sweep.dir={sweep_dir}", f"data.cache_dir={sweep_dir.parent / 'cache'}", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def test_table1_tiny_multirun_and_report(teacher, tmp_path):
    sweep = tmp_path / "sweep"
    proc = multirun("table1_tiny", teacher, sweep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = sorted(sweep.glob("*/summary.json"))
    assert len(summaries) == 4
    md = report(sweep)
    text = md.read_text()
    assert "| squat |" in text and "| pact |" in text and "w8a8" in text and "w4a4" in text and "FP (teacher)" in text
    rows = [l for l in text.splitlines() if l.startswith("| squat") or l.startswith("| pact")]
    assert all("–" not in r for r in rows), rows  # every cell filled
    png = sweep / "report_bits.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_ablation_losses_rows_name_the_switches(teacher, tmp_path):
    sweep = tmp_path / "sweep"
    proc = multirun("ablation_losses_tiny", teacher, sweep, "trainer.max_steps=2", "trainer.val_check_interval=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = report(sweep).read_text()
    for re_, rd in (("0.0", "0.0"), ("0.0", "1.0"), ("0.5", "0.0"), ("0.5", "1.0")):
        assert f"| r_entropy={re_}, r_distribution={rd} |" in text


def test_report_on_a_missing_dir_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="multirun dir"):
        report(tmp_path / "nope")


def test_ablation_token_ratio_columns_cover_mixed_and_uniform(teacher, tmp_path):
    sweep = tmp_path / "sweep"
    proc = multirun("ablation_token_ratio_tiny", teacher, sweep, "trainer.max_steps=2", "trainer.val_check_interval=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = next(l for l in report(sweep).read_text().splitlines() if l.startswith("|  |"))
    # columns ordered by average activation bits: ratio 1 (8), then uniform 6 and ratio 0.5 (6 each), ratio 0 (4)
    cols = [c.strip() for c in header.strip("|").split("|")][2:]
    assert cols[0] == "w4a4_8_r100" and set(cols[1:3]) == {"w4a6", "w4a4_8"} and cols[3] == "w4a4_8_r0"
