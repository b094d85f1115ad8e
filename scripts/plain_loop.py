"""A bare PyTorch training loop for the FP teacher: the yardstick the Lightning pipeline is measured against.

Same data, tokenizer, model and optimizer settings as ``squat-train`` (it composes the same Hydra config and
reuses squat's data module and model builder); only the loop differs: no Trainer, no callbacks, no loggers,
no validation during training. It stops at ``trainer.max_steps`` or ``--minutes``, whichever comes first, and
saves a ``save_pretrained`` folder that ``squat-eval`` scores exactly like a ``squat-train`` teacher.

    python scripts/plain_loop.py --out outputs/docs/plain_loop experiment=babylm_teacher
    squat-eval model_path=outputs/docs/plain_loop/model data=babylm
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from squat.config import CONF_DIR, DataConfig, ModelConfig, StageConfig, TrainerConfig, register_configs
from squat.data import TextDataModule
from squat.eval.perplexity import sum_nll
from squat.lit_module import make_optimizer
from squat.models import build_model, num_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (model/ and summary.json go here)")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget for training")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for squat-train")
    args = ap.parse_args()

    register_configs()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=args.overrides)
    data: DataConfig = OmegaConf.to_object(cfg.data)
    model_cfg: ModelConfig = OmegaConf.to_object(cfg.model)
    stage: StageConfig = OmegaConf.to_object(cfg.stage)
    tr: TrainerConfig = OmegaConf.to_object(cfg.trainer)
    torch.manual_seed(cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)

    dm = TextDataModule(data).prepare()
    model = build_model(model_cfg, dm.vocab_size, dm.tokenizer.eos_token_id).train()
    opt, sched = make_optimizer(model, stage, tr.max_steps)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if tr.precision.startswith("bf16") else contextlib.nullcontext()
    )
    tokens = torch.from_numpy(dm.train_tokens.astype("int64"))
    B, T = data.batch_size, data.seq_len
    budget = args.minutes * 60 if args.minutes else math.inf

    t0, step, loss = time.time(), 0, float("nan")
    while step < tr.max_steps and time.time() - t0 < budget:
        starts = torch.randint(0, len(tokens) - T + 1, (B,))
        batch = torch.stack([tokens[s : s + T] for s in starts.tolist()])
        with autocast:
            logits = model(input_ids=batch).logits
        out = sum_nll(logits, batch) / batch[:, 1:].numel()
        opt.zero_grad(set_to_none=True)
        out.backward()
        if tr.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tr.gradient_clip_val)
        opt.step()
        sched.step()
        step, loss = step + 1, out.item()
        if step % 50 == 0:
            print(f"step {step} loss {loss:.4f} {(time.time() - t0) / step:.3f} s/step", flush=True)
    minutes = (time.time() - t0) / 60

    out_dir = Path(args.out)
    model.save_pretrained(out_dir / "model")
    dm.tokenizer.save_pretrained(out_dir / "model")
    summary = {"steps": step, "train_minutes": minutes, "s_per_step": minutes * 60 / max(step, 1),
               "final_train_loss": loss, "params": num_params(model), "overrides": args.overrides}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
