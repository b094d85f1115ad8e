"""The paper's accuracy claims at CPU scale, from one command: teacher, every sweep, evaluation and the reports.

    python scripts/reproduce.py                       # everything under outputs/repro (about 8 hours on 2 cores)
    python scripts/reproduce.py --root DIR --smoke    # the same pipeline in minutes (tiny steps; for CI and tests)

Steps (each skipped when its outputs exist, so rerunning the same command after an interruption resumes):
  1. the FP teacher on BabyLM (``experiment=babylm_teacher``) into ROOT/teacher, then ``squat-eval`` of it into
     ROOT/teacher/eval (whole dev split per domain, 2000 lines scored alone, BLiMP): the FP row of every table;
  2. the sweeps (conf/experiment/repro_*.yaml) into ROOT/{table1,fig7,fig8}/..., two single-threaded jobs at a time
     (``launcher=joblib``); rerun, a sweep skips its finished jobs and resumes an interrupted one from its last
     checkpoint;
  3. ``squat-report`` of ROOT/table1, ROOT/fig7 and ROOT/fig8 (report.md, report.json, PNGs, wandb).
Extra arguments are Hydra overrides passed to every ``squat-train`` call.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# report dir -> [(sub-sweep dir, experiment)]
SWEEPS = {
    "table1": [("w4a4", "repro_table1_w4a4"), ("8bit", "repro_table1_8bit")],
    "fig7": [("losses", "repro_fig7"), ("entropy", "repro_fig7_entropy")],
    "fig8": [("ratios", "repro_fig8"), ("pair", "repro_fig8_pair"), ("topk", "repro_topk")],
}
SMOKE = ["trainer.max_steps=3", "trainer.val_check_interval=3", "data.max_train_chars=200000",
         "data.max_val_chunks=8", "callbacks.final_eval.lines=50", "callbacks.final_eval.blimp_max_pairs=8"]
SMOKE_TEACHER = ["trainer.max_steps=20", "trainer.val_check_interval=20", "data.max_train_chars=200000",
                 "data.max_val_chunks=8", "callbacks.final_eval.lines=50", "model.hidden_size=64",
                 "model.intermediate_size=128", "model.num_layers=2", "model.num_heads=2", "data.tokenizer.vocab_size=512"]

# report dir -> (sub dir, sweep, method, jobs): a cell whose config another sweep already trains is linked in from
# there, not trained twice (Fig. 7's rE and rD both on is Table I's Squat W4A4, repro_table1_w4a4's 3 seeds)
SHARED = {"fig7": ("both", "table1/w4a4", "squat", 3)}


def shared_jobs(root: Path, report_dir: str) -> list[Path]:
    _, src, method, _ = SHARED[report_dir]
    return [s.parent for s in sorted((root / src).glob("*/summary.json"))
            if OmegaConf.load(s.parent / "resolved_config.yaml").method.name == method]


def link_shared(root: Path, report_dir: str) -> None:
    sub, src, method, n = SHARED[report_dir]
    jobs = shared_jobs(root, report_dir)
    if len(jobs) < n:
        raise SystemExit(f"{report_dir} reuses {root / src}'s {n} finished {method} jobs and finds {len(jobs)}: run "
                         f"that sweep first (scripts/reproduce.py without --only, or --only {src.split('/')[0]})")
    dst = root / report_dir / sub
    dst.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        if not (dst / job.name).exists():
            (dst / job.name).symlink_to(os.path.relpath(job, dst))


def sh(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {' '.join(cmd)}  (log: {log})", flush=True)
    t0 = time.time()
    with log.open("a") as fh:
        res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    print(f"  -> exit {res.returncode} after {(time.time() - t0) / 60:.1f} min", flush=True)
    if res.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}; see {log}")


def jobs_done(sweep: Path) -> int:
    return len(list(sweep.glob("*/summary.json")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="outputs/repro", help="where everything goes (default: outputs/repro)")
    ap.add_argument("--smoke", action="store_true", help="tiny steps and a tiny teacher: checks the pipeline only")
    ap.add_argument("--jobs", type=int, default=2, help="parallel single-threaded jobs per sweep (default 2)")
    ap.add_argument("--only", choices=list(SWEEPS), action="append", help="run only these reports' sweeps")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every squat-train call")
    a = ap.parse_args(argv)
    root = Path(a.root).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.time()
    for report_dir, (_, src, _, _) in SHARED.items():
        if a.only and report_dir in a.only and src.split("/")[0] not in a.only:
            link_shared(root, report_dir)  # reused from a sweep this call will not run: if missing, fail now

    teacher = root / "teacher"
    if not (teacher / "summary.json").is_file():  # an interrupted teacher continues from its last checkpoint
        sh([str(BIN / "squat-train"), "experiment=babylm_teacher", f"hydra.run.dir={teacher}", "trainer.max_time=null",
            *(["ckpt_path=last"] if teacher.is_dir() else []), *(SMOKE_TEACHER if a.smoke else []), *a.overrides],
           root / "logs" / "teacher.log")
    if not (teacher / "eval" / "eval.json").is_file():
        sh([str(BIN / "squat-eval"), f"model_path={teacher / 'model'}", "data=babylm", f"hydra.run.dir={teacher / 'eval'}",
            "blimp_dir=${oc.env:SQUAT_BLIMP_DIR,../shared/data/blimp_filtered_sample}", "line_eval_max_lines=2000",
            *(["max_batches=2", "line_eval_max_lines=50", "blimp_max_pairs=8", "data.max_train_chars=200000"]
              if a.smoke else [])],
           root / "logs" / "teacher_eval.log")

    for report_dir, sweeps in SWEEPS.items():
        if a.only and report_dir not in a.only:
            continue
        for sub, experiment in sweeps:
            sweep = root / report_dir / sub
            sh([str(BIN / "squat-train"), "-m", f"experiment={experiment}", f"hydra.sweep.dir={sweep}",
                f"stage.teacher={teacher / 'model'}", "launcher=joblib", f"hydra.launcher.n_jobs={a.jobs}",
                *(SMOKE if a.smoke else []), *a.overrides], root / "logs" / f"{report_dir}_{sub}.log")
            print(f"  {jobs_done(sweep)} jobs finished in {sweep}", flush=True)
        if report_dir in SHARED:
            link_shared(root, report_dir)
        sh([str(BIN / "squat-report"), str(root / report_dir)], root / "logs" / f"report_{report_dir}.log")
    print(f"reproduction done in {(time.time() - t0) / 3600:.2f} h: reports in "
          + ", ".join(str(root / d / "report.md") for d in SWEEPS if not a.only or d in a.only))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
