"""scripts/plain_loop.py, the bare-loop yardstick for the teacher: it trains, stops where told, and saves a
model squat's loader and evaluator take."""
from __future__ import annotations

import json
import math
import subprocess
import sys

from squat.models import load_model
from tests.conftest import ROOT, TINY


def test_plain_loop_trains_and_saves_a_loadable_model(tmp_path):
    overrides = TINY + ["trainer.max_steps=40", "stage.lr=1e-2", "stage.warmup_steps=5",
                        f"data.cache_dir={tmp_path / 'cache'}"]
    subprocess.run([sys.executable, str(ROOT / "scripts" / "plain_loop.py"), "--out", str(tmp_path / "run"), *overrides],
                   check=True, cwd=ROOT, capture_output=True)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["steps"] == 40 and s["params"] > 0
    assert s["final_train_loss"] < math.log(384) - 1.0  # well below the uniform guess over the 384-token vocab
    model = load_model(str(tmp_path / "run" / "model"))
    assert model.get_output_embeddings().weight.shape[0] == 384
