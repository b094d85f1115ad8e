"""What a QAT training step costs, side by side in one process: plain distillation vs quantized students.

Every variant runs the LightningModule's own loss (``SquatLitModule.qat_losses``: student forward, teacher
forward, the method's loss terms), backward, gradient clipping and an AdamW step on the same batch shape.
Variants are measured round-robin (one step of each per round) so they share the machine's state; the table
gives the median step time and its ratio to plain distillation, in wall clock and in the process's CPU time. With
one thread the CPU-time ratio is the robust one on a shared machine (another process's load stretches wall clock,
not the CPU time this process spends). Compare the ratios, not the seconds.

    python scripts/step_cost.py --teacher outputs/docs/babylm_teacher/model --threads 1
    python scripts/step_cost.py                      # a random tiny LLaMA teacher on the embedded text
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from squat.lit_module import make_optimizer
from squat.train import build
from squat.utils import to_typed

VARIANTS = {
    "plain distillation (FP student)": ["quant=fp", "method=lsq"],
    "LSQ W4A4, linears only": ["quant=w4a4", "method=lsq", "quant.sites.q=false", "quant.sites.k=false",
                               "quant.sites.v=false", "quant.sites.probs=false"],
    "LSQ W4A4, all sites": ["quant=w4a4", "method=lsq"],
    "Squat W4A4 (entropy + distribution losses)": ["quant=w4a4", "method=squat"],
    "Squat W4 A4:8 (losses + token policy)": ["quant=w4a4_8", "method=squat"],
}


def compose(overrides: list[str], out: Path):
    from hydra import compose as hcompose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from squat.config import CONF_DIR, register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hcompose("train", overrides=[f"output_dir={out}", "logger=csv", "callbacks=none"] + overrides,
                       return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def random_teacher(out: Path, data: list[str]) -> Path:
    """A randomly initialised teacher saved like a pretrain run (the step's cost does not depend on training)."""
    from squat.data import TextDataModule
    from squat.models import build_model

    rc = to_typed(compose(data, out))
    dm = TextDataModule(rc.data).prepare()
    model = build_model(rc.model, dm.vocab_size, dm.tokenizer.eos_token_id)
    model.save_pretrained(out / "model")
    dm.tokenizer.save_pretrained(out / "model")
    return out / "model"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", help="a pretrain run's model/ folder (default: a random tiny LLaMA)")
    ap.add_argument("--data", default="builtin", help="data config group (builtin | babylm)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", action="append", help="restrict to variants whose name contains this")
    ap.add_argument("--out", help="write step_cost.json here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="squat_step_cost_"))
    data = [f"data={a.data}", f"data.batch_size={a.batch}", f"data.seq_len={a.seq_len}"]
    teacher = Path(a.teacher) if a.teacher else random_teacher(tmp / "teacher", data)
    runs = {}
    for name, ov in VARIANTS.items():
        if a.only and not any(s in name for s in a.only):
            continue
        cfg = compose(data + ["stage=qat", f"stage.teacher={teacher}"] + ov, tmp / str(len(runs)))
        rc = to_typed(cfg)
        torch.manual_seed(0)
        dm, lit, _ = build(rc, cfg)
        opt, _ = make_optimizer(lit.student, rc.stage, 1000)
        batches = iter(dm.train_dataloader())
        runs[name] = (lit, opt, batches, [])

    def step(lit, opt, batches) -> tuple[float, float]:
        batch = next(batches)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = lit.qat_losses(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lit.student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, time.process_time() - c0

    for r in range(a.rounds + 2):  # two warm-up rounds are not kept
        for lit, opt, batches, times in runs.values():
            t = step(lit, opt, batches)
            if r >= 2:
                times.append(t)
    res = {"threads": a.threads, "batch": a.batch, "seq_len": a.seq_len, "rounds": a.rounds,
           "teacher": str(teacher), "torch": torch.__version__}
    for i, clock in enumerate(("wall", "cpu")):
        med = {n: statistics.median(t[i] for t in v[3]) for n, v in runs.items()}
        base = next(iter(med.values()))
        res[f"median_{clock}_s"], res[f"ratio_{clock}"] = med, {n: m / base for n, m in med.items()}
    print(f"| step ({a.batch} x {a.seq_len} tokens, {a.threads} thread(s), median of {a.rounds}) "
          "| wall s/step | vs plain | CPU s/step | vs plain |")
    print("|---|---:|---:|---:|---:|")
    for n in runs:
        print(f"| {n} | {res['median_wall_s'][n]:.3f} | {res['ratio_wall'][n]:.2f}x "
              f"| {res['median_cpu_s'][n]:.3f} | {res['ratio_cpu'][n]:.2f}x |")
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "step_cost.json").write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
