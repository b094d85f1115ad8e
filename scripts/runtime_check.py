"""A trained student through the integer runtime against its fake-quant model, on real text (issue 11, must-show 1).

For each QAT run folder (``<run>/model`` is the fake-quant student, ``<run>/export`` its integer export):
  1. every integer GEMM and the fused quantized linear equal the Python integer reference on the export's own
     weights and sites, fed the student's real inputs of every linear (``squat.kernels.bench.check_exactness``);
  2. logits of ``--seqs`` dev sequences of ``--seq-len`` tokens through the runtime against the fake-quant model:
     max |diff| / max |logit| per sequence (the contract: < 1e-3), the share of positions within 1e-3, argmax
     agreement, each side's mean next-token NLL on the same text, and each layer's token choices equal;
  3. greedy generation of ``--steps`` tokens from ``--prompts`` dev prompts: the runtime (KV cache) against the
     model's ``generate()``, token for token.

    python scripts/runtime_check.py /root/squat-outputs/repro/table1/w4a4/0 ... --dev ../shared/data/babylm_dev_partial
Prints one JSON line per run and a markdown table; exits 1 if any run fails a check.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from squat.export import MANIFEST_FILE, export_model
from squat.kernels.bench import check_exactness
from squat.kernels.binding import load
from squat.kernels.runtime import IntegerRuntime
from squat.quant.prepare import QUANT_CONFIG_FILE, load_quantized, quant_linears


def dev_ids(dev: Path, tok, n: int, length: int) -> torch.Tensor:
    """``n`` windows of ``length`` tokens spread evenly over the dev split (lines joined with EOS, as trained)."""
    ids: list[int] = []
    for f in sorted(dev.glob("*.dev")):
        for line in f.read_text(encoding="utf-8").splitlines():
            ids += [tok.eos_token_id, *tok(line)["input_ids"]]
    step = (len(ids) - length) // n
    return torch.tensor([ids[i * step: i * step + length] for i in range(n)])


def check(run: Path, dev: Path, seqs: int, seq_len: int, prompts: int, prompt_tokens: int, steps: int) -> dict:
    model = load_quantized(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    export = run / "export"
    if not (export / MANIFEST_FILE).is_file():
        export_model(model, export)
    policy = json.loads((run / "model" / QUANT_CONFIG_FILE).read_text())["quant"]
    val = dev_ids(dev, tok, seqs, seq_len)

    acts, hooks = {}, []
    for name, lin in quant_linears(model).items():
        hooks.append(lin.register_forward_pre_hook(
            lambda m, args, name=name: acts.__setitem__(name, args[0][0].float().numpy())))
    with torch.no_grad():
        model(val[:1])
    for h in hooks:
        h.remove()
    tp = policy.get("token_policy") or {}
    exact = check_exactness(load(), export, acts, float(tp.get("ratio") or 0.5))

    rt = IntegerRuntime(export, max_seq=max(seq_len, prompt_tokens + steps))
    worst, choices_equal, close, agree, nll_rt, nll_fq = 0.0, True, [], [], [], []
    for seq in val:
        with torch.no_grad():
            ref = model(seq[None]).logits[0].numpy()
        got = rt.logits(seq)
        per_pos = np.abs(got - ref).max(-1) / np.abs(ref).max()
        worst = max(worst, float(per_pos.max()))
        close.append(per_pos < 1e-3)
        agree.append(got.argmax(-1) == ref.argmax(-1))
        for side, out in ((nll_rt, got), (nll_fq, ref)):
            lp = torch.log_softmax(torch.from_numpy(out[:-1]).double(), -1)
            side.append(-lp.gather(1, seq[1:, None]).mean().item())
        state = model.squat_quant.state
        if state is not None:
            choices_equal &= all(np.array_equal(rt.high_flags(l), h[0].numpy()) for l, h in state.high.items())

    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id = None, 0  # never stop early: both sides produce every token
    same, distinct = 0, set()
    for p in dev_ids(dev, tok, prompts, prompt_tokens):
        with torch.no_grad():
            want = model.generate(p[None], attention_mask=torch.ones_like(p[None]), max_new_tokens=steps,
                                  do_sample=False)[0, prompt_tokens:].tolist()
        same += rt.generate(p, steps) == want
        distinct.update(want)
    return {"run": str(run), "quant": policy.get("name"), "gemms_checked": exact["checked"],
            "gemm_failures": exact["failures"], "logits_rel_diff_max": worst,
            "positions_within_1e-3": float(np.mean(close)), "argmax_agreement": float(np.mean(agree)),
            "nll_runtime": float(np.mean(nll_rt)), "nll_fake_quant": float(np.mean(nll_fq)),
            "token_choices_equal": choices_equal,
            "generations_identical": same, "prompts": prompts, "distinct_generated_tokens": len(distinct),
            "ok": exact["ok"] and worst < 1e-3 and choices_equal and same == prompts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="QAT run folders (with model/ and, if exported, export/)")
    ap.add_argument("--dev", type=Path, default=Path("../shared/data/babylm_dev_partial"))
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--prompt-tokens", type=int, default=20)
    ap.add_argument("--steps", type=int, default=32)
    a = ap.parse_args(argv)
    if not a.dev.is_dir():
        raise SystemExit(f"--dev {a.dev}: no such folder (the BabyLM dev files, see ../shared/data/README.md)")
    torch.set_num_threads(1)
    rows = []
    for run in a.runs:
        r = check(run, a.dev, a.seqs, a.seq_len, a.prompts, a.prompt_tokens, a.steps)
        print(json.dumps(r), flush=True)
        rows.append(r)
    print("\n| run | quant | integer GEMMs equal to the reference | logits max rel. diff | positions within 1e-3 "
          "| argmax agreement | NLL runtime / fake-quant | token choices equal | greedy generations identical |\n"
          "|---|---|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['quant']} | {r['gemms_checked'] - len(r['gemm_failures'])}/{r['gemms_checked']} | "
              f"{r['logits_rel_diff_max']:.1e} | {r['positions_within_1e-3']:.3f} | {r['argmax_agreement']:.3f} | "
              f"{r['nll_runtime']:.4f} / {r['nll_fake_quant']:.4f} | {r['token_choices_equal']} | "
              f"{r['generations_identical']}/{r['prompts']} |")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
