"""Cached decoding of a trained token-adaptive student against recomputation, on real text.

For each student folder: greedy generation of ``--steps`` tokens from ``--prompts`` prompts (the first
``--prompt-tokens`` tokens of dev lines), the KV cache on. Per step, the relative L2 difference between the cached
step's logits and a no-cache forward of the whole sequence so far; and per layer, the realised share of 8-bit
tokens among the decoded positions, beside the target ratio and the share at the same positions of real dev text
(one no-cache forward), since the share depends on the position. With the causal ``threshold`` rule the two forwards
decide every token's precision identically; with the paper's ``topk`` they do not (docs/method.md).

    python scripts/decode_check.py outputs/docs/babylm_token_rule/*/model --dev ../shared/data/babylm_dev_partial
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoTokenizer

from squat.quant.prepare import QUANT_CONFIG_FILE, load_quantized


def prompts(dev: Path, tok, n: int, length: int) -> torch.Tensor:
    """The first ``length`` tokens of ``n`` dev lines spread over the split (every k-th long-enough line)."""
    lines = [ln for f in sorted(dev.glob("*.dev")) for ln in f.read_text(encoding="utf-8").splitlines()]
    ids = [x for x in (tok(ln)["input_ids"] for ln in lines) if len(x) >= length]
    if len(ids) < n:
        raise SystemExit(f"{dev}: only {len(ids)} lines of >= {length} tokens; lower --prompt-tokens")
    step = len(ids) // n
    return torch.tensor([ids[i * step][:length] for i in range(n)])


def check(model_dir: Path, dev: Path, n: int, length: int, steps: int) -> dict:
    model = load_quantized(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = prompts(dev, tok, n, length)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
                             do_sample=False, output_logits=True, return_dict_in_generate=True)
        state = model.squat_quant.state
        decoded = {l: float(h[:, length:].float().mean()) for l, h in sorted(state.high.items())}
        full = model(out.sequences).logits
        # The same positions of real dev text in one no-cache forward: the rule's share depends on the position
        # (a token's attention to the first key shrinks as keys accumulate), so this is the like-for-like target.
        real = prompts(dev, tok, n, length + steps)
        model(real)
        at_positions = {l: float(h[:, length:].float().mean()) for l, h in sorted(state.high.items())}
    diffs = [(lg - full[:, length + i - 1]).norm(dim=-1) / full[:, length + i - 1].norm(dim=-1)
             for i, lg in enumerate(out.logits)]
    d = torch.stack(diffs)
    policy = json.loads((model_dir / QUANT_CONFIG_FILE).read_text())["quant"]["token_policy"]
    return {"model": str(model_dir), "rule": policy.get("rule"), "ratio": policy.get("ratio"),
            "logits_rel_diff_mean": float(d.mean()), "logits_rel_diff_max": float(d.max()),
            "decoded_8bit_share_per_layer": decoded, "dev_text_8bit_share_same_positions": at_positions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--dev", type=Path, default=Path("../shared/data/babylm_dev_partial"))
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--prompt-tokens", type=int, default=20)
    ap.add_argument("--steps", type=int, default=32)
    a = ap.parse_args()
    if not a.dev.is_dir():
        raise SystemExit(f"--dev {a.dev}: no such folder (the BabyLM dev files, see ../shared/data/README.md)")
    for m in a.models:
        r = check(m, a.dev, a.prompts, a.prompt_tokens, a.steps)
        shares = ", ".join(f"{s:.2f}" for s in r["decoded_8bit_share_per_layer"].values())
        same = ", ".join(f"{s:.2f}" for s in r["dev_text_8bit_share_same_positions"].values())
        print(f"{m}: rule={r['rule']} ratio={r['ratio']}  cached vs recomputed logits: mean rel diff "
              f"{r['logits_rel_diff_mean']:.2e}, max {r['logits_rel_diff_max']:.2e}; 8-bit share while decoding "
              f"per layer: {shares} (dev text, same positions, no cache: {same})")
        print(json.dumps(r))


if __name__ == "__main__":
    main()
