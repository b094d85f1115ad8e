"""Run plumbing shared by the entry points: config validation, loggers, closing wandb, summaries."""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("squat")


def to_typed(cfg: DictConfig):
    """Composed config -> dataclasses; runs every ``__post_init__`` check before any long work."""
    return OmegaConf.to_object(cfg)


def plain(obj: Any) -> Any:
    """Dataclasses/enums -> JSON-able builtins."""
    if is_dataclass(obj):
        return {k: plain(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, Enum):
        return obj.value
    return obj


def instantiate_dict(cfg: DictConfig | dict) -> list:
    """Instantiate every ``_target_`` entry of a name -> config mapping (loggers, callbacks)."""
    return [hydra.utils.instantiate(v) for v in (cfg or {}).values() if v is not None and "_target_" in v]


def task_wrapper(fn: Callable) -> Callable:
    """Log failures with the run dir and always close wandb, so a crashed job in a multirun does not leave a
    dangling run that swallows the next job's metrics."""

    @functools.wraps(fn)
    def wrapped(cfg: DictConfig):
        try:
            return fn(cfg)
        except Exception:
            log.exception("run failed; outputs so far are in %s", cfg.get("output_dir", "?"))
            raise
        finally:
            import sys

            if "wandb" in sys.modules:
                import wandb

                if wandb.run is not None:
                    wandb.finish()

    return wrapped


def write_summary(out_dir: Path, summary: dict) -> str:
    """Write summary.json and summary.md in the run dir; return the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    lines = [f"# {summary.get('title', 'squat run')}", ""]
    for k, v in summary.items():
        if k == "title":
            continue
        if isinstance(v, float):
            v = f"{v:.4g}"
        lines.append(f"- **{k}**: {v}")
    md = "\n".join(lines) + "\n"
    (out_dir / "summary.md").write_text(md)
    return md
