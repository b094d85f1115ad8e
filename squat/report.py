"""``squat-report <multirun dir>``: every job's summary -> a markdown table in the paper's layout + PNG plots.

Columns are the quantization settings (FP = the teacher), rows are whatever else varied across the jobs
(method, loss ratios, ...). Plots: metric vs average activation bits, and vs kernel speed when the jobs ran the
kernel benchmark.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

TEACHER_KEY = {"val_ppl_end": "teacher_val_ppl", "val_bpb_end": "teacher_val_bpb"}
ROW_KEYS = ["method.name", "method.r_entropy", "method.r_distribution", "method.entropy_form",
            "method.distribution_form", "method.kl_direction", "quant.token_policy.select", "quant.token_policy.score"]


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def load_jobs(sweep_dir: Path) -> list[dict]:
    jobs = []
    for summary in sorted(sweep_dir.rglob("summary.json")):
        job_dir = summary.parent
        cfg_file = job_dir / "resolved_config.yaml"
        if not cfg_file.is_file():
            continue
        cfg = yaml.safe_load(cfg_file.read_text())
        if _get(cfg, "stage.name") != "qat":
            continue  # teachers enter as the FP column through their students' teacher_val_* numbers
        s = json.loads(summary.read_text())
        q = cfg.get("quant", {})
        tp = q.get("token_policy", {}) or {}
        act = q.get("act_bits")
        eff = None if act is None else (tp["ratio"] * tp["high_bits"] + (1 - tp["ratio"]) * act if tp.get("enabled") else act)
        job = {"dir": str(job_dir), "cfg": cfg, "summary": s, "quant": q.get("name", "?"),
               "weight_bits": q.get("weight_bits"), "act_bits_eff": eff}
        kb = job_dir / "kernel_bench.json"
        if kb.is_file():
            job["kernel"] = json.loads(kb.read_text())
        jobs.append(job)
    if not jobs:
        raise FileNotFoundError(f"no job with summary.json and resolved_config.yaml under {sweep_dir}")
    return jobs


def _fmt(v) -> str:
    if v is None:
        return "–"
    return (f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}") if isinstance(v, float) else str(v)


def table(jobs: list[dict], metric: str) -> str:
    varying = [k for k in ROW_KEYS if len({json.dumps(_get(j["cfg"], k)) for j in jobs}) > 1]
    if "method.name" in varying:  # keys that only follow the method (e.g. baselines' rE = rD = 0) add nothing
        by_method = {}
        for j in jobs:
            by_method.setdefault(_get(j["cfg"], "method.name"), []).append(j)
        varying = ["method.name"] + [k for k in varying if k != "method.name" and any(
            len({json.dumps(_get(j["cfg"], k)) for j in g}) > 1 for g in by_method.values())]

    def row_of(j: dict) -> str:
        if varying == ["method.name"] or not varying:
            return str(_get(j["cfg"], "method.name"))
        return ", ".join(f"{k.split('.')[-1]}={_get(j['cfg'], k)}" for k in varying)

    cols = list(dict.fromkeys(j["quant"] for j in sorted(jobs, key=lambda j: (-(j["weight_bits"] or 99), -(j["act_bits_eff"] or 99)))))
    tkey = TEACHER_KEY.get(metric)
    teachers = [j["summary"][tkey] for j in jobs if tkey and j["summary"].get(tkey)]
    rows = list(dict.fromkeys(row_of(j) for j in jobs))
    cell = {(row_of(j), j["quant"]): j["summary"].get(metric) for j in jobs}
    head = ["", "FP (teacher)"] + cols if teachers else [""] + cols
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [_fmt(cell.get((r, c))) for c in cols]
        lines.append("| " + " | ".join([r] + ([_fmt(teachers[0])] if teachers else []) + vals) + " |")
    return "\n".join(lines)


def kernel_table(jobs: list[dict]) -> str | None:
    kj = [j for j in jobs if "kernel" in j]
    if not kj:
        return None
    res = kj[0]["kernel"]
    lines = []
    for cpu, by_m in res.get("insn_per_token", {}).items():
        for m, t in by_m.items():
            fp16 = t.get("FP16")
            row = " | ".join(f"{k} {fp16 / v:.2f}x" for k, v in t.items() if fp16 and k != "FP16")
            lines.append(f"- qemu `-cpu {cpu}`, M = {m}: instructions vs FP16: {row}")
    return "\n".join(lines) or None


def plots(jobs: list[dict], metric: str, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({_get(j["cfg"], "method.name") for j in jobs}):
        pts = sorted((j["act_bits_eff"], j["summary"].get(metric)) for j in jobs
                     if _get(j["cfg"], "method.name") == method and j["act_bits_eff"] is not None and j["summary"].get(metric))
        if pts:
            ax.plot(*zip(*pts), marker="o", label=method)
    teachers = [j["summary"]["teacher_val_ppl"] for j in jobs if j["summary"].get("teacher_val_ppl")]
    if teachers and metric == "val_ppl_end":
        ax.axhline(teachers[0], color="gray", ls="--", label="FP teacher")
    ax.set_xlabel("average activation bits per token")
    ax.set_ylabel(metric)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p = out / "report_bits.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    made.append(p)
    # Jobs of one sweep share the model's shapes, so one benchmark prices every job's precision.
    kref = next((j["kernel"] for j in jobs if "kernel" in j), None)
    kj = [j for j in jobs if kref is not None and j["summary"].get(metric) and j["act_bits_eff"] is not None]
    if kj:
        fig, ax = plt.subplots(figsize=(6, 4))
        for j in kj:
            t = j.get("kernel", kref).get("insn_per_token", {}).get("cortex-a76", {})
            t = t.get(str(max(map(int, t)))) if t else None
            key = "mixed" if (j["cfg"]["quant"].get("token_policy") or {}).get("enabled") else f"W{j['weight_bits']}A{int(j['act_bits_eff'])}"
            if t and t.get(key):
                ax.scatter(t["FP16"] / t[key], j["summary"][metric], label=f"{j['quant']} {_get(j['cfg'], 'method.name')}")
        ax.set_xlabel("kernel speedup over FP16 (qemu cortex-a76 instructions, prefill)")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out / "report_kernel.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        made.append(p)
    return made


def report(sweep_dir: str | Path, metric: str = "val_ppl_end", out_dir: str | Path | None = None) -> Path:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a folder: pass a multirun dir (outputs/multiruns/<date>/<time>)")
    out = Path(out_dir) if out_dir else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    jobs = load_jobs(sweep_dir)
    parts = [f"# squat report: {sweep_dir}", "", f"{len(jobs)} jobs; metric `{metric}` (lower is better for ppl/bpb).",
             "", table(jobs, metric)]
    if metric != "val_bpb_end" and any(j["summary"].get("val_bpb_end") for j in jobs):
        parts += ["", "Bits per byte:", "", table(jobs, "val_bpb_end")]
    kt = kernel_table(jobs)
    if kt:
        parts += ["", "Kernel (first job with a benchmark):", "", kt]
    pngs = plots(jobs, metric, out)
    parts += [""] + [f"![{p.stem}]({p.name})" for p in pngs]
    md = out / "report.md"
    md.write_text("\n".join(parts) + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="squat-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir")
    ap.add_argument("--metric", default="val_ppl_end", help="summary.json key (val_ppl_end, val_bpb_end, blimp_average)")
    ap.add_argument("--out", default=None, help="where report.md and PNGs go (default: the sweep dir)")
    a = ap.parse_args(argv)
    md = report(a.sweep_dir, a.metric, a.out)
    print(md.read_text())
    print(f"written: {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
