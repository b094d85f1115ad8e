"""CI-sized multiruns of the paper's experiments, then squat-report on their outputs."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from squat.report import Stats, compare, load_jobs, report
from squat.train import run
from tests.conftest import ROOT, TINY, compose_cfg


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


def _last_csv(job: Path, key: str) -> float:
    rows = [r for r in csv.DictReader((job / "csv" / "metrics.csv").open()) if r.get(key)]
    return float(rows[-1][key])


def test_table1_tiny_multirun_with_two_seeds_and_report(teacher, tmp_path):
    """Table I layout with seed statistics: every cell's mean and spread are those of its jobs' own logged metrics."""
    sweep = tmp_path / "sweep"
    proc = multirun("table1_tiny", teacher, sweep, "seed=1,2", "trainer.max_steps=2", "trainer.val_check_interval=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(sorted(sweep.glob("*/summary.json"))) == 8
    text = report(sweep).read_text()
    assert "FP (teacher)" in text and "w8a8" in text and "w4a4" in text
    rows = [l for l in text.splitlines() if l.startswith("| squat") or l.startswith("| pact")]
    assert rows and all("–" not in r and "(n=2)" in r for r in rows), rows  # every cell filled, two seeds each
    rep = json.loads((sweep / "report.json").read_text())
    assert len(rep["cells"]) == 4 and {c["row"] for c in rep["cells"]} == {"squat", "pact"}
    for cell in rep["cells"]:
        assert sorted(cell["seeds"]) == [1, 2]
        for metric, key in (("val_ppl_end", "val/ppl"), ("val_lines/bpb", "final/val_lines/bpb")):
            vals = [_last_csv(Path(d), key) for d in cell["dirs"]]
            st = cell["stats"][metric]
            assert st["mean"] == pytest.approx(statistics.mean(vals), rel=1e-6)
            assert st["sd"] == pytest.approx(statistics.stdev(vals), rel=1e-6, abs=1e-9)
    assert {c["a"].split(" @ ")[1] for c in rep["comparisons"]["val_ppl_end"]} == {"w8a8", "w4a4"}
    for png in ("report_bits.png", "report_cells.png"):
        data = (sweep / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    runs = list((sweep / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].rglob("*.table.json")) and list(runs[0].rglob("*.png"))

    # scripts/reproduce.py reuses a finished cell in another report by linking its jobs; the report follows links
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
    repro = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(repro)
    root = tmp_path / "root"
    (root / "table1").mkdir(parents=True)
    sweep.rename(root / "table1" / "w4a4")
    repro.link_shared(root, "fig7")
    squat_jobs = sorted(d.name for d in (root / "table1" / "w4a4").glob("*-squat-*"))
    assert len(squat_jobs) == 4 and sorted(j.dir.name for j in load_jobs(root / "fig7")) == squat_jobs
    with pytest.raises(SystemExit, match="finds 0: run that sweep first"):
        repro.link_shared(tmp_path / "elsewhere", "fig7")


def test_welch_comparison_marks_only_differences_beyond_the_seed_spread():
    far = compare(Stats([70.0, 70.5, 69.5]), Stats([60.0, 60.5, 59.5]))
    near = compare(Stats([70.0, 71.0, 69.0]), Stats([70.5, 69.5, 71.5]))
    assert far["distinguishable"] and far["diff"] == pytest.approx(10.0)
    assert not near["distinguishable"]
    # equal variances, n = 3 each: df = 4, half-width = t(0.975, 4) * sqrt(2 * 0.25 / 3)
    assert far["df"] == pytest.approx(4.0) and far["ci95"] == pytest.approx(2.776 * (0.5 / 3) ** 0.5, rel=1e-4)
    assert compare(Stats([70.0]), Stats([60.0, 61.0])) is None  # one seed: no spread to compare with


def test_report_on_pretrain_jobs_only_says_it_reports_qat_jobs(tmp_path):
    job = tmp_path / "0"
    job.mkdir()
    (job / "summary.json").write_text("{}")
    (job / "resolved_config.yaml").write_text("stage: {name: pretrain}\n")
    with pytest.raises(FileNotFoundError, match="none of them QAT"):
        report(tmp_path, use_wandb=False)


def test_ablation_losses_rows_name_the_switches(teacher, tmp_path):
    sweep = tmp_path / "sweep"
    proc = multirun("ablation_losses_tiny", teacher, sweep, "trainer.max_steps=2", "trainer.val_check_interval=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = report(sweep, use_wandb=False).read_text()
    for re_, rd in (("0.0", "0.0"), ("0.0", "1.0"), ("0.5", "0.0"), ("0.5", "1.0")):
        assert f"| r_entropy={re_}, r_distribution={rd} |" in text


def test_report_on_a_missing_dir_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="multirun dir"):
        report(tmp_path / "nope")


def test_ablation_token_ratio_columns_cover_mixed_and_uniform(teacher, tmp_path):
    sweep = tmp_path / "sweep"
    proc = multirun("ablation_token_ratio_tiny", teacher, sweep, "trainer.max_steps=2", "trainer.val_check_interval=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = next(l for l in report(sweep, use_wandb=False).read_text().splitlines() if l.startswith("|  |"))
    # columns ordered by average activation bits: ratio 1 (8), then uniform 6 and ratio 0.5 (6 each), ratio 0 (4)
    cols = [c.strip() for c in header.strip("|").split("|")][2:]
    assert cols[0] == "w4a4_8_r100" and set(cols[1:3]) == {"w4a6", "w4a4_8"} and cols[3] == "w4a4_8_r0"
