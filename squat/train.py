"""``squat-train``: compose the config, build data, model(s) and trainer, fit, save, summarise.

stage=pretrain trains the FP teacher from scratch; stage=qat quantizes a copy of a saved teacher and trains it
with the teacher(s) as distillation targets. Everything else is config.
"""
from __future__ import annotations

import csv
import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from transformers import AutoTokenizer

from squat.config import CONF_DIR, RunConfig, Stage, TrainData, register_configs
from squat.callbacks import FinalEvaluation, FiniteLossGuard, FlushLogsAtCheckpoint, KernelBenchmark, StepSeed
from squat.callbacks.kernel_benchmark import kernel_headline
from squat.data import TextDataModule
from squat.data.teacher_samples import teacher_samples
from squat.eval.perplexity import evaluate
from squat.export import MANIFEST_FILE, export_model
from squat.lit_module import SquatLitModule
from squat.models import build_model, load_model, num_params
from squat.quant.prepare import calibrate, quantize_model, save_quantized
from squat.utils import (RunFolder, check_free_space, finished_summary, instantiate_dict, instantiate_loggers,
                         is_rank_zero, plain, resume_hint, task_wrapper, to_typed, write_summary)

log = logging.getLogger("squat")
register_configs()
# StepBatches resumes mid-epoch from the restored step; Lightning cannot see that and warns otherwise.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(rc: RunConfig, cfg: DictConfig):
    """Data module, LightningModule and Trainer for one run (no training yet).

    pretrain: a fresh model from the preset. qat: the student starts as a copy of ``stage.teacher`` (whose
    tokenizer it keeps), is quantized in place and calibrated on the first global training batch; the teacher(s)
    are frozen.
    """
    teachers = []
    world = rc.trainer.devices * rc.trainer.num_nodes
    if rc.stage.name == Stage.pretrain:
        dm = TextDataModule(rc.data, seed=rc.seed).prepare()
        student = build_model(rc.model, dm.vocab_size, dm.tokenizer.eos_token_id)
    else:
        log.info("tokenizer: the teacher's (%s): the student is a copy of the teacher and keeps its vocabulary",
                 rc.stage.teacher)
        dm = TextDataModule(rc.data, tokenizer=AutoTokenizer.from_pretrained(rc.stage.teacher), seed=rc.seed).prepare()
        student = load_model(rc.stage.teacher, attn_implementation="eager")
        for path in [rc.stage.teacher] + list(rc.stage.extra_teachers):
            t = load_model(path, attn_implementation="eager", dtype=_DTYPES[rc.stage.teacher_dtype])
            if t.get_output_embeddings().weight.shape[0] != dm.vocab_size:
                raise ValueError(f"teacher {path} has a different vocabulary than {rc.stage.teacher}: ensemble "
                                 "teachers must share the student's tokenizer")
            teachers.append(t)
        if rc.data.train_data == TrainData.teacher:
            dm.train_sequences = teacher_samples(teachers[0], rc.data.teacher_samples, rc.data.seq_len, dm.vocab_size,
                                                 rc.data.cache_dir)
        if not rc.quant.is_float:
            quantize_model(student, rc.quant, rc.method.quantizer)
            calibrate(student, dm.first_global_batch(world))
        student.train()  # from_pretrained returns eval mode; NIPQ's noise and dropout need train mode
    lit = SquatLitModule(student, rc.stage, rc.method, teachers=teachers, token_bytes=dm.token_bytes)
    trainer = L.Trainer(
        **asdict(rc.trainer),
        logger=instantiate_loggers(cfg.logger) or False,
        callbacks=instantiate_dict(cfg.callbacks) + [StepSeed(rc.seed), FiniteLossGuard(rc.stage.lr), FlushLogsAtCheckpoint()],
        use_distributed_sampler=False,  # TextDataModule shards itself: DDP ranks split each global batch
        default_root_dir=rc.output_dir,
    )
    return dm, lit, trainer


def save_outputs(rc: RunConfig, lit: SquatLitModule, dm: TextDataModule, out: Path) -> dict:
    """The trained student as a HF folder (plus quantizer state), and for a quantized student the integer export."""
    model_dir = out / "model"
    paths = {"model_dir": str(model_dir)}
    if lit.quant is None:
        lit.student.save_pretrained(model_dir)
        dm.tokenizer.save_pretrained(model_dir)
    else:
        save_quantized(lit.student, model_dir, dm.tokenizer)
        if rc.quant.weight_bits is not None:
            if not (out / "export" / MANIFEST_FILE).is_file():  # the KernelBenchmark callback may have written it
                export_model(lit.student, out / "export")
            paths["export_dir"] = str(out / "export")
    return paths


def check_checkpoint(path: str | Path) -> None:
    """Open a checkpoint to resume before any work, tensors only (never unpickling code): a truncated or foreign
    file fails here, named, instead of in Lightning with advice to load it unsafely."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}; truncated by a crash or a full disk, "
                         "or not a Lightning checkpoint): resume from another file in its folder with ckpt_path=..., "
                         "or start afresh without ckpt_path") from None


def check_launch(rc: RunConfig, multirun: bool) -> None:
    """DDP with processes started by Lightning re-runs the command line per process, which a -m sweep cannot do."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    external = SLURMEnvironment.detect() or TorchElasticEnvironment.detect()
    if multirun and rc.trainer.devices > 1 and not external:
        raise ValueError(
            f"trainer.devices={rc.trainer.devices} in a local multirun: Lightning starts the other DDP processes by "
            "re-running the command line, which a -m sweep cannot do. Run each job as a single run, or launch the "
            f"sweep with launcher=slurm hydra.launcher.tasks_per_node={rc.trainer.devices}")


def _resume_point(out: Path) -> Path | None:
    """A resumed job continues from checkpoints/last.ckpt; without one it starts afresh in its folder, dropping the
    partial logs of the attempt that died before its first checkpoint."""
    last = out / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    for name in ("csv", "wandb", "checkpoints", START_FILE):
        p = out / name
        if p.exists():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return None


def _kept_csv_rows(out: Path, step: int) -> tuple[list[str], list[dict]]:
    """The killed attempt's metrics up to its last checkpoint (later rows would repeat in the resumed log)."""
    f = out / "csv" / "metrics.csv"
    if not f.is_file():
        return [], []
    with f.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), [r for r in reader if r.get("step") and int(r["step"]) < step]


def _restore_csv(logger: CSVLogger, header: list[str], rows: list[dict]) -> None:
    """Lightning's CSV writer deletes an existing metrics.csv when it starts: put the kept rows back, under their
    header, and let the resumed run append to them."""
    writer = logger.experiment
    with open(writer.metrics_file_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    writer.metrics_keys = list(header)


START_FILE = "val_start.json"  # the untrained (or freshly quantized) model's validation, kept for resumed runs


def run(cfg: DictConfig) -> dict:
    rc: RunConfig = to_typed(cfg)
    if rc.torch_threads:
        torch.set_num_threads(rc.torch_threads)
    out = Path(rc.output_dir)
    folder = RunFolder(out, rc.ckpt_path, rc.overwrite)
    check_launch(rc, folder.multirun)
    if rc.ckpt_path not in (None, "last"):
        check_checkpoint(rc.ckpt_path)
    try:
        if is_rank_zero():
            done = folder.claim()
        else:  # other DDP ranks follow rank 0, which has claimed the folder before starting them
            done = finished_summary(out) if folder.resuming else None
        if done is not None:
            log.info("%s already finished (summary.json): skipped; overwrite=true trains it again", out)
            return done
        return _run(rc, cfg, out, folder)
    finally:
        folder.release()


def _run(rc: RunConfig, cfg: DictConfig, out: Path, folder: RunFolder) -> dict:
    ckpt = rc.ckpt_path
    if folder.resuming:
        ckpt = _resume_point(out) if is_rank_zero() else (out / "checkpoints" / "last.ckpt")
        ckpt = ckpt if ckpt is not None and Path(ckpt).is_file() else None
        if ckpt is not None:
            check_checkpoint(ckpt)
    resumed_step = int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"]) if ckpt else 0
    if is_rank_zero():
        folder.save_config(cfg)
        OmegaConf.save(cfg, out / "resolved_config.yaml", resolve=True)
        log.info("run folder %s; if it stops, resume with: %s", out, resume_hint(out))
    L.seed_everything(rc.seed, workers=True)

    dm, lit, trainer = build(rc, cfg)
    if is_rank_zero():
        check_free_space(out, num_params(lit.student))
    header, kept = _kept_csv_rows(out, resumed_step) if ckpt is not None and is_rank_zero() else ([], [])
    for lg in trainer.loggers:
        if header and isinstance(lg, CSVLogger):
            _restore_csv(lg, header, kept)
        lg.log_hyperparams(plain(rc))
    t0 = time.time()
    start_file = out / START_FILE
    if ckpt is not None and start_file.is_file():  # resumed: the start is the original run's, not the checkpoint's
        start = json.loads(start_file.read_text())
        log.info("resuming %s from step %d (%s)", out, resumed_step, ckpt)
    else:
        start = trainer.validate(lit, datamodule=dm, verbose=False)[0]
        if trainer.is_global_zero:
            start_file.write_text(json.dumps(start))
    t_fit = time.time()
    trainer.fit(lit, datamodule=dm, ckpt_path=str(ckpt) if ckpt is not None else None)
    fit_minutes = (time.time() - t_fit) / 60
    if lit.fit_val is not None and lit.fit_val[0] == trainer.global_step:
        end = lit.fit_val[1]
    else:
        end = trainer.validate(lit, datamodule=dm, verbose=False)[0]

    teacher = evaluate(lit.teachers[0], dm.val_dataloader(), dm.token_bytes) if lit.teachers else {}
    if not trainer.is_global_zero:
        return {"val_ppl_end": end["val/ppl"]}
    paths = save_outputs(rc, lit, dm, out)
    summary = {
        "title": f"{rc.stage.name.value}: {rc.model.name} ({num_params(lit.student) / 1e6:.2f}M params)",
        "stage": rc.stage.name.value,
        "quant": rc.quant.name,
        "method": rc.method.name if rc.stage.name == Stage.qat else None,
        "data": f"{rc.data.source.value} ({dm.summary()['train_tokens']} train / {dm.summary()['val_tokens']} val tokens, vocab {dm.vocab_size})",
        "steps": trainer.global_step,
        "minutes": (time.time() - t0) / 60,
        "fit_minutes": fit_minutes,  # training (and in-run validation) only, for step-rate comparisons
        "val_ppl_start": start["val/ppl"],
        "val_ppl_end": end["val/ppl"],
        "val_bpb_end": end.get("val/bpb"),
        "teacher_val_ppl": teacher.get("ppl"),
        "teacher_val_bpb": teacher.get("bpb"),
        "low_bit_token_fraction": end.get("val/low_bit_token_fraction"),
        **paths,
        "output_dir": str(out),
    }
    if resumed_step:
        summary["resumed_from_step"] = resumed_step
    if trainer.world_size > 1:
        summary["processes"] = trainer.world_size
    for cb in trainer.callbacks:
        if isinstance(cb, FinalEvaluation):
            summary.update(cb.result)
        if isinstance(cb, KernelBenchmark) and (cb.result or cb.skipped):
            summary["kernel"] = kernel_headline(cb.result) if cb.result else f"skipped: {cb.skipped}"
    summary["status"] = "finished"  # a rerun of the same sweep skips this job
    print("\n" + write_summary(out, summary))
    return summary


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
@task_wrapper
def main(cfg: DictConfig) -> float:
    summary = run(cfg)
    return summary["val_ppl_end"]


if __name__ == "__main__":
    main()
