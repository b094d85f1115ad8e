"""Every option of every config group composes and validates; bad values fail fast with readable errors."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from squat.config import CONF_DIR, RunConfig
from squat.utils import to_typed
from tests.conftest import compose_cfg

GROUPS = ["data", "model", "stage", "quant", "method", "trainer", "logger", "callbacks", "debug", "experiment",
          "hparams_search", "launcher"]
# Groups whose options need an optional Hydra plugin (pip install -e ".[sweep]").
PLUGINS = {("hparams_search", "optuna"): "hydra_plugins.hydra_optuna_sweeper",
           ("launcher", "slurm"): "hydra_plugins.hydra_submitit_launcher",
           ("launcher", "joblib"): "hydra_plugins.hydra_joblib_launcher"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def needed_overrides(group: str, option: str, tmp_path: Path) -> list[str]:
    """Options that point at files get a valid stand-in so composition itself is what is tested."""
    teacher = tmp_path / "teacher"
    teacher.mkdir(exist_ok=True)
    babylm = tmp_path / "babylm"
    babylm.mkdir(exist_ok=True)
    extra = {
        ("stage", "qat"): [f"stage.teacher={teacher}"],
        ("model", "pretrained"): [f"model.pretrained={teacher}"],
        ("data", "babylm"): [f"data.train_dir={babylm}", f"data.dev_dir={babylm}"],
    }.get((group, option), [])
    if group in ("quant", "experiment"):
        extra += ["stage=qat", f"stage.teacher={teacher}"]
    if group == "experiment":  # some experiments read BabyLM; ../shared/data need not exist here
        extra += [f"data.train_dir={babylm}", f"data.dev_dir={babylm}"]
    return extra


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option, tmp_path):
    if (group, option) in PLUGINS:
        pytest.importorskip(PLUGINS[(group, option)], reason='optional plugin: pip install -e ".[sweep]"')
    cfg = compose_cfg([f"{group}={option}"] + needed_overrides(group, option, tmp_path), tmp_path)
    rc = to_typed(cfg)
    assert isinstance(rc, RunConfig)
    if group in ("data", "model", "quant", "method"):
        assert getattr(rc, group).__class__.__name__.endswith("Config")


def test_every_group_has_options():
    for g in GROUPS:
        assert options(g), f"conf/{g} is empty"


def test_unknown_key_in_a_config_file_fails_at_compose_time(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "typo.yaml").write_text("# @package _global_\ndata:\n  sequence_len: 64\n")
    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg([f"hydra.searchpath=[file://{tmp_path}]", "experiment=typo"], tmp_path)
    assert "sequence_len" in str(e.value) and "DataConfig" in str(e.value)


def test_unknown_key_on_the_command_line_fails(tmp_path):
    with pytest.raises(ConfigCompositionException, match="data.sequence_len"):
        compose_cfg(["data.sequence_len=64"], tmp_path)


def test_typo_in_existing_key_fails(tmp_path):
    with pytest.raises(Exception) as e:
        compose_cfg(["data.seq_len=long"], tmp_path)
    assert "seq_len" in str(e.value) + str(e.value.__cause__)


def test_bad_enum_value_names_the_choices(tmp_path):
    with pytest.raises(Exception) as e:
        compose_cfg(["data.source=wikipedia"], tmp_path)
    text = str(e.value) + str(e.value.__cause__)
    assert "builtin" in text and "babylm" in text


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["quant.weight_bits=3", "quant.act_bits=16"], "quant.act_bits=16"),
        (["data.seq_len=1"], "data.seq_len"),
        (["quant=w4a4"], "stage=qat"),
        (["stage=qat"], "stage.teacher"),
        (["stage=qat", "stage.teacher=/no/such/dir"], "stage=pretrain"),
        (["data=babylm", "data.train_dir=/no/such/dir"], "data.train_dir"),
        (["ckpt_path=/no/such.ckpt"], "ckpt_path"),
        (["method.quantizer=adaround"], "method.quantizer"),
        (["model.hidden_size=100", "model.num_heads=3"], "divisible"),
        (["trainer.max_steps=-1", "trainer.max_time=00:00:20:00"], "trainer.max_steps"),
    ],
)
def test_bad_values_fail_before_training_with_a_fix(overrides, needle, tmp_path):
    cfg = compose_cfg(overrides, tmp_path)
    with pytest.raises(Exception) as e:
        to_typed(cfg)
    assert needle in str(e.value), str(e.value)
