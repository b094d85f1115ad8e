"""Slow (-m slow, run in CI): the README's main-job script end to end with few steps."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_script_runs_teacher_student_and_kernel_bench(tmp_path):
    before = set((ROOT / "outputs" / "quickstart").glob("*")) if (ROOT / "outputs" / "quickstart").exists() else set()
    proc = subprocess.run(
        ["bash", "scripts/quickstart.sh", "trainer.max_steps=8", "trainer.val_check_interval=8",
         "trainer.limit_val_batches=2", "logger=csv", "callbacks.kernel_benchmark.reps=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = sorted(set((ROOT / "outputs" / "quickstart").glob("*")) - before)
    assert len(new) == 1
    teacher = json.loads((new[0] / "teacher" / "summary.json").read_text())
    student = json.loads((new[0] / "student" / "summary.json").read_text())
    assert teacher["val_ppl_end"] < teacher["val_ppl_start"]
    assert student["quant"] == "w4a4_8" and student["teacher_val_ppl"] > 0
    assert (new[0] / "student" / "kernel_bench.json").is_file()
    assert "squat quickstart: outputs in" in proc.stdout and "val_ppl_end" in proc.stdout
