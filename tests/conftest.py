"""Shared fixtures: the real config, composed once per test and shrunk to seconds of CPU work."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from squat.config import CONF_DIR, register_configs

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

register_configs()

# Small enough to run a few training steps in seconds; still real text and a real tokenizer.
TINY = [
    "data.max_train_chars=60000",
    "data.max_val_chars=15000",
    "data.tokenizer.vocab_size=384",
    "data.batch_size=8",
    "data.seq_len=64",
    "model.hidden_size=64",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.intermediate_size=128",
    "logger=csv",
    "callbacks.progress_bar=null",
    "callbacks.kernel_benchmark=null",
    "trainer.enable_progress_bar=false",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
]


def compose_cfg(overrides: list[str], tmp_path: Path, config_name: str = "train"):
    """Compose like ``@hydra.main`` does (HydraConfig set, so ``${hydra:...}`` resolves), minus the hydra node."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[f"output_dir={tmp_path}", f"data.cache_dir={tmp_path.parent / 'squat_cache'}"] + overrides,
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "babylm_10M_partial").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present in the project's workplace)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
