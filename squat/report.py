"""``squat-report <sweep dir>``: a sweep's QAT jobs -> the paper's tables with seed statistics, plots and wandb.

Jobs that differ only in ``seed`` form one *cell*: a row (whatever else varied: method, loss ratios, ...) and a
column (the quantization setting, FP = the teacher). Each cell reports the mean, the sample standard deviation and
n over its seeds; two cells' difference counts as *distinguishable* when it exceeds its 95% interval (Welch's t on
the seeds of both), and the tables mark cells distinguishable from the reference row with ``*``. Outputs, in the
sweep dir: ``report.md``, ``report.json`` (every cell's values and statistics), ``report_bits.png`` (metric vs
average activation bits, mixed and uniform precision as separate series, error bars = standard deviation) and
``report_cells.png`` (one bar per cell and metric), also logged to wandb (offline by default) in the sweep's group.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# metric key in summary.json -> (label, +1 if higher is better else -1)
METRICS = {
    "blimp/average": ("BLiMP average (%)", +1),
    "val_ppl_end": ("validation perplexity", -1),
    "val_bpb_end": ("validation bits per byte", -1),
    "val_lines/bpb": ("bits per byte, lines scored alone", -1),
}
TEACHER_KEY = {"val_ppl_end": "teacher_val_ppl", "val_bpb_end": "teacher_val_bpb"}
ROW_KEYS = ["method.name", "method.r_entropy", "method.r_distribution", "method.entropy_form",
            "method.distribution_form", "method.kl_direction", "quant.token_policy.rule", "quant.token_policy.select",
            "quant.token_policy.score", "stage.lr", "stage.warmup_steps", "trainer.max_steps"]
# two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal 1.96)
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: float) -> float:
    """Conservative (degrees of freedom rounded down) two-sided 95% quantile of Student's t."""
    d = int(math.floor(df))
    return T975[max(d, 1) - 1] if d <= len(T975) else 1.96


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


@dataclass
class Stats:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n

    @property
    def sd(self) -> float | None:
        """Sample standard deviation over seeds (None for a single seed)."""
        if self.n < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))

    @property
    def ci95(self) -> float | None:
        """Half-width of the 95% interval of the mean."""
        return None if self.sd is None else t975(self.n - 1) * self.sd / math.sqrt(self.n)

    def fmt(self, digits: int) -> str:
        s = f"{self.mean:.{digits}f}"
        return s + (f" ± {self.sd:.{digits}f} (n={self.n})" if self.sd is not None else " (n=1)")

    def to_json(self) -> dict:
        return {"values": self.values, "n": self.n, "mean": self.mean, "sd": self.sd, "ci95": self.ci95}


def compare(a: Stats, b: Stats) -> dict | None:
    """``a - b`` with its 95% interval (Welch): distinguishable when the interval excludes 0. None below 2 seeds."""
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.sd**2 / a.n, b.sd**2 / b.n
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va**2 / (a.n - 1) if va else 0) + (vb**2 / (b.n - 1) if vb else 0)) if se else 1e9
    half = t975(df) * se
    diff = a.mean - b.mean
    return {"diff": diff, "ci95": half, "df": df, "distinguishable": abs(diff) > half}


@dataclass
class Job:
    dir: Path
    cfg: dict
    summary: dict
    seed: int
    quant: str
    weight_bits: int | None
    act_bits_eff: float | None
    mixed: bool
    row: str = ""

    def value(self, metric: str) -> float | None:
        v = self.summary.get(metric)
        return float(v) if isinstance(v, (int, float)) else None


def load_jobs(sweep_dir: Path) -> list[Job]:
    jobs, others = [], 0
    # links count: a report may reuse another sweep's identical jobs
    found = [Path(d) / "summary.json" for d, _, fs in os.walk(sweep_dir, followlinks=True) if "summary.json" in fs]
    for summary in sorted(found):
        cfg_file = summary.parent / "resolved_config.yaml"
        if not cfg_file.is_file():
            continue
        cfg = yaml.safe_load(cfg_file.read_text())
        if _get(cfg, "stage.name") != "qat":
            others += 1  # teachers enter as the FP row, through the students' stage.teacher
            continue
        q = cfg.get("quant", {})
        tp = q.get("token_policy") or {}
        act = q.get("act_bits")
        mixed = bool(tp.get("enabled"))
        eff = None if act is None else (tp["ratio"] * tp["high_bits"] + (1 - tp["ratio"]) * act if mixed else act)
        jobs.append(Job(summary.parent, cfg, json.loads(summary.read_text()), cfg.get("seed"), q.get("name", "?"),
                        q.get("weight_bits"), eff, mixed))
    if not jobs:
        if others:
            raise FileNotFoundError(f"{sweep_dir} holds {others} finished job(s), none of them QAT: squat-report "
                                    "compares quantized students (stage=qat); a teacher enters as their FP row")
        raise FileNotFoundError(f"no finished job (summary.json and resolved_config.yaml) under {sweep_dir}")
    return jobs


def assign_rows(jobs: list[Job]) -> list[str]:
    """Label each job's row by the settings that vary across the sweep (other than seed and quant)."""
    varying = [k for k in ROW_KEYS if len({json.dumps(_get(j.cfg, k)) for j in jobs}) > 1]
    if "method.name" in varying:  # keys that only follow the method (e.g. baselines' rE = rD = 0) add nothing
        by_method: dict = {}
        for j in jobs:
            by_method.setdefault(_get(j.cfg, "method.name"), []).append(j)
        varying = ["method.name"] + [k for k in varying if k != "method.name" and any(
            len({json.dumps(_get(j.cfg, k)) for j in g}) > 1 for g in by_method.values())]
    for j in jobs:
        if varying in (["method.name"], []):
            j.row = str(_get(j.cfg, "method.name"))
        else:
            j.row = ", ".join(f"{k.split('.')[-1]}={_get(j.cfg, k)}" for k in varying)
    return list(dict.fromkeys(j.row for j in jobs))


@dataclass
class Sweep:
    dir: Path
    jobs: list[Job]
    rows: list[str] = field(default_factory=list)
    cols: list[str] = field(default_factory=list)
    teacher: dict = field(default_factory=dict)  # metric -> value of the FP teacher

    def cell(self, row: str, col: str) -> list[Job]:
        return [j for j in self.jobs if j.row == row and j.quant == col]

    def stats(self, row: str, col: str, metric: str) -> Stats | None:
        vals = [v for v in (j.value(metric) for j in self.cell(row, col)) if v is not None]
        return Stats(vals) if vals else None

    def metrics(self) -> list[str]:
        return [m for m in METRICS if any(j.value(m) is not None for j in self.jobs)]

    def phenomena(self) -> list[str]:
        keys = {k for j in self.jobs for k in j.summary if k.startswith("blimp/") and k != "blimp/average"}
        return sorted(keys)


def _teacher_values(jobs: list[Job]) -> dict:
    """The FP row: the teacher run's final evaluation (its summary.json, or ``squat-eval``'s ``eval/eval.json`` in the
    teacher run's folder) for BLiMP and line scores, and the teacher scores the students recorded on their own
    validation split for perplexity and bits per byte."""
    out: dict = {}
    teacher = _get(jobs[0].cfg, "stage.teacher")
    run_dir = Path(teacher).parent if teacher else None
    for f in ([run_dir / "summary.json", run_dir / "eval" / "eval.json"] if run_dir else []):
        if f.is_file():
            s = json.loads(f.read_text())
            out.update({k: v for k, v in s.items() if (k.startswith("blimp/") or k.startswith("val_lines/"))
                        and isinstance(v, (int, float))})
    for m, tk in TEACHER_KEY.items():  # the students score their teacher on their own validation split
        v = next((j.summary[tk] for j in jobs if j.summary.get(tk) is not None), None)
        if v is not None:
            out[m] = v
    return out


def build(sweep_dir: Path) -> Sweep:
    jobs = load_jobs(sweep_dir)
    sw = Sweep(sweep_dir, jobs)
    sw.rows = assign_rows(jobs)
    order = sorted(jobs, key=lambda j: (-(j.weight_bits or 99), -(j.act_bits_eff or 99), j.mixed))
    sw.cols = list(dict.fromkeys(j.quant for j in order))
    sw.teacher = _teacher_values(jobs)
    return sw


def _digits(metric: str) -> int:
    return 3 if "bpb" in metric else (1 if metric.startswith("blimp") else 2)


def metric_table(sw: Sweep, metric: str, reference: str | None) -> str:
    """Rows x columns, mean ± sd (n); ``*`` = distinguishable from the reference row in the same column."""
    d = _digits(metric)
    head = [""] + (["FP (teacher)"] if metric in sw.teacher else []) + sw.cols
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sw.rows:
        cells = []
        for c in sw.cols:
            st = sw.stats(r, c, metric)
            ref = sw.stats(reference, c, metric) if reference and r != reference else None
            cmp = compare(st, ref) if st and ref else None
            cells.append("–" if st is None else st.fmt(d) + (" *" if cmp and cmp["distinguishable"] else ""))
        fp = [f"{sw.teacher[metric]:.{d}f}"] if metric in sw.teacher else []
        lines.append("| " + " | ".join([r] + fp + cells) + " |")
    return "\n".join(lines)


def phenomena_table(sw: Sweep) -> str | None:
    """BLiMP per phenomenon (mean over seeds) for every cell, the paper's Table I columns."""
    phen = sw.phenomena()
    if not phen:
        return None
    names = [p.split("/", 1)[1] for p in phen]
    head = ["cell", "n"] + names + ["average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if any(p in sw.teacher for p in phen):
        lines.append("| " + " | ".join(["FP (teacher)", "1"] + [f"{sw.teacher.get(p, float('nan')):.1f}" for p in phen]
                                      + [f"{sw.teacher.get('blimp/average', float('nan')):.1f}"]) + " |")
    for c in sw.cols:
        for r in sw.rows:
            if not sw.cell(r, c):
                continue
            st = {p: sw.stats(r, c, p) for p in phen + ["blimp/average"]}
            n = max((s.n for s in st.values() if s), default=0)
            vals = [f"{st[p].mean:.1f}" if st[p] else "–" for p in phen + ["blimp/average"]]
            lines.append("| " + " | ".join([f"{r} @ {c}", str(n)] + vals) + " |")
    return "\n".join(lines)


def comparisons(sw: Sweep, metric: str) -> list[dict]:
    """Every pair of cells with at least 2 seeds each: the difference of means and whether it exceeds the spread."""
    cells = [(r, c) for c in sw.cols for r in sw.rows if (st := sw.stats(r, c, metric)) and st.n >= 2]
    out = []
    for (ra, ca), (rb, cb) in itertools.combinations(cells, 2):
        cmp = compare(sw.stats(ra, ca, metric), sw.stats(rb, cb, metric))
        out.append({"a": f"{ra} @ {ca}", "b": f"{rb} @ {cb}", **cmp})
    return out


def comparison_lines(sw: Sweep, metric: str) -> list[str]:
    d = _digits(metric) + 1
    lines = []
    for c in comparisons(sw, metric):
        verdict = "distinguishable" if c["distinguishable"] else "within the seed spread"
        lines.append(f"- {c['a']} − {c['b']}: {c['diff']:+.{d}f} ± {c['ci95']:.{d}f} (95%) → {verdict}")
    return lines


def plots(sw: Sweep, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sw.metrics()
    made = []
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for r in sw.rows:
            for mixed in (False, True):
                pts = []
                for c in sw.cols:
                    js = [j for j in sw.cell(r, c) if j.mixed == mixed and j.act_bits_eff is not None]
                    st = sw.stats(r, c, metric) if js else None
                    if st:
                        pts.append((js[0].act_bits_eff, st.mean, st.sd or 0.0))
                if pts:
                    pts.sort()
                    x, y, e = zip(*pts)
                    label = f"{r} ({'token-adaptive' if mixed else 'uniform'})" if any(j.mixed for j in sw.jobs) else r
                    ax.errorbar(x, y, yerr=e, marker="o" if not mixed else "s", capsize=3, label=label)
        if metric in sw.teacher:
            ax.axhline(sw.teacher[metric], color="gray", ls="--", label="FP teacher")
        ax.set_xlabel("average activation bits per token")
        ax.set_title(METRICS[metric][0], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    p = out / "report_bits.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    made.append(p)

    cells = [(r, c) for c in sw.cols for r in sw.rows if sw.cell(r, c)]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6, 0.7 * len(cells) + 2), 2.6 * len(metrics)), squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        st = [sw.stats(r, c, metric) for r, c in cells]
        ax.bar(range(len(cells)), [s.mean if s else 0 for s in st], yerr=[(s.sd or 0) if s else 0 for s in st],
               capsize=3, color="tab:blue", alpha=0.8)
        if metric in sw.teacher:
            ax.axhline(sw.teacher[metric], color="gray", ls="--", label="FP teacher")
            ax.legend(fontsize=7)
        vals = [s.mean for s in st if s]
        if vals:  # zoom on the differences: they are small next to the values
            lo, hi = min(vals + [sw.teacher.get(metric, vals[0])]), max(vals + [sw.teacher.get(metric, vals[0])])
            spread = max((s.sd or 0) for s in st if s)
            pad = 0.15 * (hi - lo) + 2 * spread + 1e-6
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel(METRICS[metric][0], fontsize=8)
        ax.set_xticks(range(len(cells)), [f"{r}\n{c}" for r, c in cells], fontsize=6, rotation=30, ha="right")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    p = out / "report_cells.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    made.append(p)
    return made


def kernel_lines(sw: Sweep) -> list[str]:
    kb = next((j.dir / "kernel_bench.json" for j in sw.jobs if (j.dir / "kernel_bench.json").is_file()), None)
    if kb is None:
        return []
    res = json.loads(kb.read_text())
    lines = []
    for cpu, by_m in res.get("insn_per_token", {}).items():
        for m, t in by_m.items():
            fp16 = t.get("FP16")
            row = " | ".join(f"{k} {fp16 / v:.2f}x" for k, v in t.items() if fp16 and k != "FP16")
            lines.append(f"- qemu `-cpu {cpu}`, M = {m}: instructions vs FP16: {row}")
    return lines


def to_json(sw: Sweep, reference: str | None) -> dict:
    cells = []
    for c in sw.cols:
        for r in sw.rows:
            js = sw.cell(r, c)
            if js:
                st = {m: sw.stats(r, c, m) for m in sw.metrics() + sw.phenomena()}
                cells.append({"row": r, "col": c, "seeds": [j.seed for j in js], "dirs": [str(j.dir) for j in js],
                              "stats": {m: s.to_json() for m, s in st.items() if s}})
    return {"sweep": str(sw.dir), "reference": reference, "rows": sw.rows, "cols": sw.cols, "teacher": sw.teacher,
            "cells": cells, "comparisons": {m: comparisons(sw, m) for m in sw.metrics()}}


def _wandb_log(sw: Sweep, tables: dict[str, str], pngs: list[Path]) -> str | None:
    """One wandb run per report in the sweep's group (the group the jobs logged to), offline unless
    ``SQUAT_WANDB_OFFLINE=false``: the tables as wandb Tables, the plots as images."""
    import wandb

    group = _get(sw.jobs[0].cfg, "logger.wandb.group") or str(sw.dir)
    offline = os.environ.get("SQUAT_WANDB_OFFLINE", "true").lower() not in ("false", "0", "no")
    run = wandb.init(project=_get(sw.jobs[0].cfg, "logger.wandb.project") or "squat", group=group,
                     job_type="report", name=f"report-{sw.dir.name}", dir=str(sw.dir),
                     mode="offline" if offline else "online", reinit=True)
    try:
        for name, md in tables.items():
            rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
            run.log({f"report/{name}": wandb.Table(columns=rows[0], data=rows[2:])})
        run.log({f"report/{p.stem}": wandb.Image(str(p)) for p in pngs})
        return run.dir
    finally:
        run.finish()


def report(sweep_dir: str | Path, reference: str | None = None, out_dir: str | Path | None = None,
           use_wandb: bool = True) -> Path:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a folder: pass a multirun dir (outputs/multiruns/<date>/<time>)")
    out = Path(out_dir) if out_dir else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    sw = build(sweep_dir)
    if reference is not None and reference not in sw.rows:
        raise ValueError(f"--reference {reference!r} is not a row of this sweep; rows: {sw.rows}")
    reference = reference or ("squat" if "squat" in sw.rows else sw.rows[0])
    seeds = sorted({j.seed for j in sw.jobs})
    parts = [f"# squat report: {sweep_dir}", "",
             f"{len(sw.jobs)} QAT jobs in {sum(1 for c in sw.cols for r in sw.rows if sw.cell(r, c))} cells, seeds "
             f"{seeds}. Cells: mean ± sample standard deviation (n seeds). `*`: the difference from the row "
             f"`{reference}` in the same column exceeds its 95% interval (Welch's t over the seeds of both cells).", ""]
    tables = {}
    for metric in sw.metrics():
        label, sign = METRICS[metric]
        tables[metric.replace("/", "_")] = t = metric_table(sw, metric, reference)
        parts += [f"## {label} ({'higher' if sign > 0 else 'lower'} is better)", "", t, ""]
    ph = phenomena_table(sw)
    if ph:
        tables["blimp_phenomena"] = ph
        parts += ["## BLiMP per phenomenon (mean over seeds)", "", ph, ""]
    comp = [(m, comparison_lines(sw, m)) for m in sw.metrics()]
    if any(lines for _, lines in comp):
        parts += ["## Differences between cells with at least 2 seeds (a − b, 95% interval)", ""]
        for m, lines in comp:
            if lines:
                parts += [f"{METRICS[m][0]}:", ""] + lines + [""]
    kl = kernel_lines(sw)
    if kl:
        parts += ["## Kernel (first job with a benchmark)", ""] + kl + [""]
    pngs = plots(sw, out)
    parts += [f"![{p.stem}]({p.name})" for p in pngs]
    (out / "report.json").write_text(json.dumps(to_json(sw, reference), indent=2))
    md = out / "report.md"
    md.write_text("\n".join(parts) + "\n")
    if use_wandb:
        _wandb_log(sw, tables, pngs)
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="squat-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir")
    ap.add_argument("--reference", default=None, help="row the `*` marks compare against (default: squat, else the first row)")
    ap.add_argument("--out", default=None, help="where report.md, report.json and PNGs go (default: the sweep dir)")
    ap.add_argument("--no-wandb", action="store_true", help="do not log the tables and plots to wandb")
    a = ap.parse_args(argv)
    md = report(a.sweep_dir, a.reference, a.out, use_wandb=not a.no_wandb)
    print(md.read_text())
    print(f"written: {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
