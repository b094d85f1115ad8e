"""``squat-train``: compose the config, build data, model(s) and trainer, fit, save, summarise.

stage=pretrain trains the FP teacher from scratch; stage=qat quantizes a copy of a saved teacher and trains it
with the teacher(s) as distillation targets. Everything else is config.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoTokenizer

from squat.config import CONF_DIR, RunConfig, Stage, TrainData, register_configs
from squat.callbacks import FinalEvaluation, KernelBenchmark
from squat.callbacks.kernel_benchmark import kernel_headline
from squat.data import TextDataModule
from squat.data.teacher_samples import teacher_samples
from squat.eval.perplexity import evaluate
from squat.export import MANIFEST_FILE, export_model
from squat.lit_module import SquatLitModule
from squat.models import build_model, load_model, num_params
from squat.quant.prepare import calibrate, quantize_model, save_quantized
from squat.utils import instantiate_dict, plain, task_wrapper, to_typed, write_summary

log = logging.getLogger("squat")
register_configs()


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(rc: RunConfig, cfg: DictConfig):
    """Data module, LightningModule and Trainer for one run (no training yet).

    pretrain: a fresh model from the preset. qat: the student starts as a copy of ``stage.teacher`` (whose
    tokenizer it keeps), is quantized in place and calibrated on a training batch; the teacher(s) are frozen.
    """
    teachers = []
    if rc.stage.name == Stage.pretrain:
        dm = TextDataModule(rc.data).prepare()
        student = build_model(rc.model, dm.vocab_size, dm.tokenizer.eos_token_id)
    else:
        dm = TextDataModule(rc.data, tokenizer=AutoTokenizer.from_pretrained(rc.stage.teacher)).prepare()
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
            calibrate(student, next(iter(dm.train_dataloader())))
        student.train()  # from_pretrained returns eval mode; NIPQ's noise and dropout need train mode
    lit = SquatLitModule(student, rc.stage, rc.method, teachers=teachers, token_bytes=dm.token_bytes)
    trainer = L.Trainer(
        **asdict(rc.trainer),
        logger=instantiate_dict(cfg.logger) or False,
        callbacks=instantiate_dict(cfg.callbacks),
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


def run(cfg: DictConfig) -> dict:
    rc: RunConfig = to_typed(cfg)
    if rc.torch_threads:
        torch.set_num_threads(rc.torch_threads)
    L.seed_everything(rc.seed, workers=True)
    out = Path(rc.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "resolved_config.yaml", resolve=True)

    dm, lit, trainer = build(rc, cfg)
    for lg in trainer.loggers:
        lg.log_hyperparams(plain(rc))
    t0 = time.time()
    start = trainer.validate(lit, datamodule=dm, verbose=False)[0]
    t_fit = time.time()
    trainer.fit(lit, datamodule=dm, ckpt_path=rc.ckpt_path)
    fit_minutes = (time.time() - t_fit) / 60
    end = trainer.validate(lit, datamodule=dm, verbose=False)[0]

    paths = save_outputs(rc, lit, dm, out)
    teacher = evaluate(lit.teachers[0], dm.val_dataloader(), dm.token_bytes) if lit.teachers else {}
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
    for cb in trainer.callbacks:
        if isinstance(cb, FinalEvaluation):
            summary.update(cb.result)
        if isinstance(cb, KernelBenchmark) and cb.result:
            summary["kernel"] = kernel_headline(cb.result)
    print("\n" + write_summary(out, summary))
    return summary


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
@task_wrapper
def main(cfg: DictConfig) -> float:
    summary = run(cfg)
    return summary["val_ppl_end"]


if __name__ == "__main__":
    main()
