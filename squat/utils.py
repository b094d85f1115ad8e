"""Run plumbing shared by the entry points: config validation, the run folder (lock, refuse, resume, skip),
loggers, closing wandb, summaries."""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import shlex
import shutil
import socket
import sys
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("squat")

RECORD_DIR = ".hydra"  # Hydra's own layout (config.yaml, hydra.yaml, overrides.yaml), written by squat (see below)
LOCK_FILE = ".squat.lock"
# Overrides that do not change what a job computes: a resumed or re-run job may differ in them.
_RUN_ONLY_KEYS = ("ckpt_path", "overwrite", "torch_threads")


def command_line_overrides() -> list[str]:
    """The task overrides of this Hydra job (for a multirun job: the sweep's values for it); [] outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def to_typed(cfg: DictConfig):
    """Composed config -> dataclasses; runs every ``__post_init__`` check before any long work. A failing check
    that names a key set on the command line also quotes what was written there."""
    try:
        return OmegaConf.to_object(cfg)
    except (ValueError, FileNotFoundError) as e:
        msg = str(e)
        wrote = [o for o in command_line_overrides()
                 if "=" in o and re.search(r"(?<![\w.])" + re.escape(o.split("=", 1)[0].lstrip("+~")) + r"\b", msg)]
        if not wrote:
            raise
        raise type(e)(f"{msg} (you wrote: {' '.join(wrote)})") from None


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


def arg(key: str, value: Any) -> str:
    """``key=value`` as one shell word that Hydra's override grammar reads back as ``value`` (paths included):
    quoted for Hydra when the value holds grammar characters, then for the shell when needed."""
    v = str(value)
    if not re.fullmatch(r"[\w/.\-+:@%~]+", v):
        v = "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return shlex.quote(f"{key}={v}")


def is_rank_zero() -> bool:
    """Global rank 0, from the launcher's environment (RANK / LOCAL_RANK / SLURM_PROCID), before any Trainer."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _job_overrides(overrides: list[str]) -> list[str]:
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in _RUN_ONLY_KEYS]


def _ours(out: Path) -> list[str]:
    """What a run folder holds besides Hydra's job logs and the lock: the previous outputs, if any."""
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE and not (p.suffix == ".log" and p.is_file()))


def finished_summary(out: Path) -> dict | None:
    f = out / "summary.json"
    if not f.is_file():
        return None
    try:
        s = json.loads(f.read_text())
    except ValueError:
        return None
    return s if s.get("status") == "finished" else None


class RunFolder:
    """The output folder of one job, claimed before anything is written there.

    - a lock (``.squat.lock``, an OS file lock, freed even by kill -9): a second process on the same folder fails
      at once, naming it;
    - a folder that already holds a run's outputs is refused, unless this run resumes it (``ckpt_path=last``, or
      any multirun job: rerunning a sweep skips its finished jobs and resumes an interrupted one from its last
      checkpoint) or ``overwrite=true`` deletes them first;
    - a resumed job must be the same job: its recorded overrides (``.hydra/overrides.yaml``) must match;
    - the folder must be writable.
    Only global rank 0 claims; other DDP ranks share rank 0's decision through the files it reads.
    """

    def __init__(self, out: str | Path, ckpt_path: str | None, overwrite: bool):
        self.out = Path(out)
        self.ckpt_path, self.overwrite = ckpt_path, overwrite
        self.overrides = command_line_overrides()
        self.multirun = _multirun()
        self._lock = None

    @property
    def resuming(self) -> bool:
        return self.multirun or self.ckpt_path == "last"

    def claim(self) -> dict | None:
        """Lock and check the folder; returns the summary of an already finished job (to skip), else None."""
        self._check_writable()
        self._acquire()
        existing = _ours(self.out)
        if existing and self.overwrite:
            log.warning("overwrite=true: deleting the previous run's outputs in %s (%s)", self.out, ", ".join(existing))
            for name in existing:
                p = self.out / name
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            existing = []
        if existing:
            self._check_same_job(existing)
            done = finished_summary(self.out)
            if done is not None:
                return done
        elif self.ckpt_path == "last" and not self.multirun:
            raise FileNotFoundError(f"ckpt_path=last: {self.out} holds no run to resume; start it without ckpt_path")
        if not (self.out / RECORD_DIR / "overrides.yaml").is_file():
            self._record()
        return None

    def _check_writable(self) -> None:
        probe = self.out / f".squat-write-test-{os.getpid()}"
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
        except OSError as e:
            raise OSError(e.errno, f"output folder {self.out} is not writable ({e.strerror}): free space or choose "
                                   f"another folder with hydra.run.dir=... (multirun: hydra.sweep.dir=...)") from None

    def _acquire(self) -> None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.out / LOCK_FILE), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RuntimeError(f"run folder {self.out} is in use by another squat run (it holds {LOCK_FILE}): wait "
                               "for that run, or give this one its own folder with hydra.run.dir=... / "
                               "hydra.sweep.dir=...") from None
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _check_same_job(self, existing: list[str]) -> None:
        if not self.resuming:
            shown = ", ".join(existing[:6]) + (", ..." if len(existing) > 6 else "")
            raise FileExistsError(
                f"run folder {self.out} already holds a run ({shown}): resume it with {arg('hydra.run.dir', self.out)} "
                f"ckpt_path=last, start afresh there with overwrite=true (deletes it), or use another hydra.run.dir")
        rec = self.out / RECORD_DIR / "overrides.yaml"
        recorded = OmegaConf.to_container(OmegaConf.load(rec)) if rec.is_file() else None
        if recorded is None or _job_overrides(recorded) != _job_overrides(self.overrides):
            was = " ".join(_job_overrides(recorded)) if recorded is not None else "(no record)"
            raise FileExistsError(
                f"run folder {self.out} holds a different job: it was made by [{was}], this job is "
                f"[{' '.join(_job_overrides(self.overrides))}]. Rerun the same command to resume it, use another "
                "hydra.sweep.dir / hydra.run.dir, or overwrite=true to delete it")

    def _record(self) -> None:
        """Hydra's .hydra/{config,hydra,overrides}.yaml (Hydra's own writing is off: it would overwrite a refused
        folder's record before this check), plus the job's command line, ready to paste."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return
        hc = HydraConfig.get()
        rec = self.out / RECORD_DIR
        rec.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(list(hc.overrides.task)), rec / "overrides.yaml")
        OmegaConf.save(hc, rec / "hydra.yaml")
        (self.out / "command.txt").write_text(
            " ".join([f"squat-{'eval' if hc.job.config_name == 'eval' else 'train'}"]
                     + [shlex.quote(o) for o in hc.overrides.task]) + "\n")

    def save_config(self, cfg: DictConfig) -> None:
        OmegaConf.save(cfg, self.out / RECORD_DIR / "config.yaml")


class ValidateSweep(Callback):
    """Hydra callback: before a basic-sweeper multirun starts its first job, compose and range-check every job's
    config, so a bad value in job 9 fails before job 0 trains (Hydra itself only checks that jobs compose). Exits
    the process: Hydra turns a callback's exception into a warning and carries on."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra import compose
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return  # e.g. Optuna draws its values as it goes; the ranges its params allow are its own
        params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        overrides = OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        before = HydraConfig.instance().cfg
        for i, job in enumerate(jobs):
            cfg = compose(config.hydra.job.config_name, overrides=list(job) + ["output_dir=/validating"],
                          return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)  # so ${hydra:...} (the wandb group) resolves as in the job
            with open_dict(cfg):
                del cfg["hydra"]
            try:
                OmegaConf.to_object(cfg)
            except (ValueError, FileNotFoundError) as e:
                sys.exit(f"{type(e).__name__}: sweep job {i} of {len(jobs)} ({' '.join(job)}): {e}; no job was started")
        HydraConfig.instance().cfg = before
        log.info("all %d jobs of the sweep validate", len(jobs))


def resume_hint(out: Path) -> str:
    """The command that resumes this job after a crash or kill -9 (also written to the job's log)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"
    hc = HydraConfig.get()
    if _multirun():
        return f"rerun the same sweep command with {arg('hydra.sweep.dir', Path(hc.sweep.dir).resolve())}"
    words = [shlex.quote(o) for o in _job_overrides(list(hc.overrides.task))]
    return " ".join(["squat-train", *words, arg("hydra.run.dir", out), "ckpt_path=last"])


def check_free_space(out: Path, n_params: int) -> None:
    """Fail before training when the folder cannot hold what the run will write: about two checkpoints (weights
    and two AdamW moments, fp32) plus the saved model and its export."""
    need = n_params * 4 * (2 * 3 + 2)
    free = shutil.disk_usage(out).free
    if free < need:
        raise OSError(28, f"output folder {out} has {free / 2**20:.0f} MiB free but this run writes about "
                          f"{need / 2**20:.0f} MiB (checkpoints, model, export): free space or choose another "
                          "folder with hydra.run.dir=...")


def _wandb_reachable(timeout: float = 3.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def instantiate_dict(cfg: DictConfig | dict) -> list:
    """Instantiate every ``_target_`` entry of a name -> config mapping (loggers, callbacks)."""
    return [hydra.utils.instantiate(v) for v in (cfg or {}).values() if v is not None and "_target_" in v]


def instantiate_loggers(cfg: DictConfig | dict) -> list:
    """Like :func:`instantiate_dict`; an online wandb logger whose server cannot be reached within seconds logs
    offline instead (wandb would otherwise stall for minutes, then fail), and says how to sync or drop it."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)) if cfg else {}
    for name, v in (cfg or {}).items():
        if v is not None and str(v.get("_target_", "")).endswith("WandbLogger") and not v.get("offline", False):
            if not _wandb_reachable():
                log.warning("logger.%s: wandb online, but %s cannot be reached: logging offline instead (upload "
                            "later with `wandb sync <run>/wandb/offline-run-*`; logger=csv drops wandb)", name,
                            os.environ.get("WANDB_BASE_URL", "api.wandb.ai"))
                v.offline = True
    return instantiate_dict(cfg)


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
            if "wandb" in sys.modules:
                import wandb

                if wandb.run is not None:
                    wandb.finish()

    return wrapped


def write_summary(out_dir: Path, summary: dict) -> str:
    """Write summary.json and summary.md in the run dir; return the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "summary.json.tmp"  # a job is finished once summary.json exists: write it whole or not at all
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(out_dir / "summary.json")
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
