"""scripts/reproduce.py end to end in smoke mode (tiny teacher, 3 QAT steps per job) on the shared BabyLM data:
every step runs, the report aggregates the seeds, and a second run of the same command does no work again."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.data]


def test_reproduce_smoke_runs_every_step_and_resumes_without_rework(shared_data, tmp_path):
    root = tmp_path / "repro"
    cmd = [sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--root", str(root), "--smoke", "--only", "table1",
           f"data.cache_dir={tmp_path / 'cache'}", "logger=csv"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3000)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    rep = json.loads((root / "table1" / "report.json").read_text())
    cells = {(c["row"], c["col"]): c for c in rep["cells"]}
    assert set(cells) == {(m, q) for m in ("squat", "pact", "nipq", "llmqat") for q in ("w8a8", "w4a8", "w4a4")}
    assert all(len(cells[(m, "w4a4")]["seeds"]) == 3 for m in ("squat", "pact", "nipq", "llmqat"))
    assert "blimp/average" in cells[("squat", "w4a4")]["stats"] and "blimp/average" in rep["teacher"]
    summaries = sorted(root.glob("table1/*/*/summary.json"))
    stamps = {p: p.stat().st_mtime_ns for p in summaries}
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3000)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in summaries} == stamps  # finished jobs were skipped, not retrained
