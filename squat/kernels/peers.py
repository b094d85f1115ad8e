"""Torch peers of the integer runtime on the host, side by side in one process: tokens/s of a prefill of P tokens
and of greedy decoding with the KV cache, for the same model as an export, run by

- **torch FP32 eager**: the export's dequantized weights (``w * s``) in the unmodified Hugging Face model
  (``LlamaForCausalLM`` / ``GPT2LMHeadModel``, HF's default attention), decoding with HF's KV cache;
- **torch int8 dynamic**: that model after ``torch.ao.quantization.quantize_dynamic`` (qint8) on every
  ``nn.Linear`` (GPT-2's ``Conv1D`` blocks are first rewritten as ``nn.Linear``, else torch would leave them float);
- **runtime <variant>**: :class:`squat.kernels.runtime.IntegerRuntime` on the host build (``prefill`` / ``step``
  timed in this process, ctypes call included), and its FP32 / FP16 baselines of the same export.

Labels are timed round-robin (every label once per round, the median of the rounds kept), all on the same torch
thread count; the C runtime is single-threaded, so only ``--threads 1`` (the default) compares like with like.
Only ratios within one run mean anything on a shared machine.

    python -m squat.kernels.peers --model llama_58m --model gpt2_97m --out DIR   # paper shapes, random weights
    python -m squat.kernels.peers --export run/export --out DIR                  # one trained export
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

TORCH_FP32, TORCH_INT8 = "torch FP32 eager", "torch int8 dynamic"
TARGET = ("W4A4", 2.0)  # issue 11: runtime decode at W4A4 >= 2x torch FP32 eager on the host (reported, not asserted)


def float_model(export_dir: str | Path, attn_implementation: str = "sdpa") -> nn.Module:
    """The export as the unmodified HF float model: its float tensors and dequantized weights ``w * s``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from squat.export import ExportedModel

    exp = ExportedModel(export_dir)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**exp.config), attn_implementation=attn_implementation)
    sd = {name: exp.float_tensor(name) for name in exp.manifest["float"]}
    for name, lin in exp.linears.items():
        w = lin.w.float() * lin.w_scale.reshape(-1, 1)
        sd[f"{name}.weight"] = w.t() if exp.manifest["family"] == "gpt2" and name != "lm_head" else w  # Conv1D: [in, out]
        if lin.bias is not None:
            sd[f"{name}.bias"] = lin.bias
    missing, unexpected = model.load_state_dict(sd, strict=False)
    left = [k for k in missing if k != "lm_head.weight" and not k.endswith("attn.bias")]  # tied head, GPT-2 mask buffer
    if unexpected or left:
        raise ValueError(f"{export_dir}: the export does not fill the HF model (missing {left}, unexpected {unexpected})")
    model.tie_weights()
    return model.eval()


def int8_dynamic(model: nn.Module) -> nn.Module:
    """Torch's own int8 model: a copy with every linear (GPT-2 ``Conv1D`` as ``nn.Linear``) dynamically quantized."""
    from transformers.pytorch_utils import Conv1D

    m = copy.deepcopy(model)
    for name, mod in list(m.named_modules()):
        if isinstance(mod, Conv1D):
            lin = nn.Linear(mod.nx, mod.nf)
            with torch.no_grad():
                lin.weight.copy_(mod.weight.t())
                lin.bias.copy_(mod.bias)
            parent, _, attr = name.rpartition(".")
            setattr(m.get_submodule(parent), attr, lin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        return torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)


class _Torch:
    """HF model: prefill with ``logits_to_keep=1`` (the last token's logits, as the runtime's prefill), then one
    forward per token on HF's KV cache (``cache``; ``past_key_values`` in older transformers)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.kw = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"

    @torch.no_grad()
    def run(self, ids: torch.Tensor, decode: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        out = self.model(ids[None], use_cache=True, logits_to_keep=1)
        t1 = time.perf_counter()
        for _ in range(decode):
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            out = self.model(tok, use_cache=True, **{self.kw: getattr(out, self.kw)})
        return t1 - t0, time.perf_counter() - t1


class _Runtime:
    def __init__(self, rt):
        self.rt = rt

    def run(self, ids: torch.Tensor, decode: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        logits = self.rt.prefill(ids)
        t1 = time.perf_counter()
        self.rt.decode(logits, decode + 1)  # the first token comes from the prefill: `decode` cached steps
        return t1 - t0, time.perf_counter() - t1


def _baseline(export: Path, name: str, max_seq: int, target: str):
    """The runtime's ``name`` baseline of ``export``, or why it is not timed on this host build."""
    from squat.kernels.runtime import IntegerRuntime

    if name == "FP16" and target == "x86-simde":
        return "FP16 under SIMDe is a scalar float64 emulation of fmla .8h (docs/kernels.md), not a host measurement"
    try:
        return _Runtime(IntegerRuntime(export, max_seq=max_seq, baseline=name.lower()))
    except ValueError as e:  # a baseline this runtime does not have
        return str(e)


def measure(exports: dict[str, Path], baseline_of: Path, prefill: int = 128, decode: int = 16, reps: int = 5,
            threads: int = 1, baselines: tuple[str, ...] = ("FP32", "FP16"), seed: int = 0) -> dict:
    """Tokens/s of every label for one model: the torch peers of ``baseline_of`` (FP32 eager, int8 dynamic), the
    runtime's ``baselines`` of ``baseline_of`` and the runtime on each export (label -> export folder).

    Returns {"prefill", "decode", "reps", "threads", "host", "torch", "runtime_target", "skipped": {label: why},
    "tok_s": {label: {"prefill": tokens/s, "decode": tokens/s}}, "seconds": {label: {"prefill": [...],
    "decode": [...]}}}; medians over ``reps`` round-robin rounds after one untimed warm-up round."""
    from squat.export import ExportedModel
    from squat.kernels.bench import host_info, torch_backends
    from squat.kernels.binding import load
    from squat.kernels.runtime import IntegerRuntime

    target = load().target
    max_seq = prefill + decode + 1
    positions = ExportedModel(baseline_of).config
    positions = positions.get("max_position_embeddings") or positions.get("n_positions")
    if max_seq > positions:
        raise ValueError(f"prefill {prefill} + decode {decode} + 1 > the model's {positions} positions: use fewer tokens")
    skipped = {}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        backends = torch_backends()
        fp = float_model(baseline_of)
        entries = {TORCH_FP32: _Torch(fp), TORCH_INT8: _Torch(int8_dynamic(fp))}
        for b in baselines:
            e = _baseline(baseline_of, b, max_seq, target)
            if isinstance(e, str):
                skipped[f"runtime {b}"] = e
            else:
                entries[f"runtime {b}"] = e
        for label, exp in exports.items():
            entries[f"runtime {label}"] = _Runtime(IntegerRuntime(exp, max_seq=max_seq))
        vocab = fp.config.vocab_size
        ids = torch.from_numpy(np.random.default_rng(seed).integers(0, vocab, prefill)).long()
        secs = {label: {"prefill": [], "decode": []} for label in entries}
        for rnd in range(reps + 1):  # round 0 warms up (allocations, caches, lazy init)
            for label, e in entries.items():
                tp, td = e.run(ids, decode)
                if rnd:
                    secs[label]["prefill"].append(tp)
                    secs[label]["decode"].append(td)
    finally:
        torch.set_num_threads(old_threads)
    tok_s = {label: {"prefill": prefill / statistics.median(s["prefill"]), "decode": decode / statistics.median(s["decode"])}
             for label, s in secs.items()}
    return {"prefill": prefill, "decode": decode, "reps": reps, "threads": threads, "host": host_info(),
            "attention": fp.config._attn_implementation,
            "torch": backends, "runtime_target": target, "skipped": skipped, "tok_s": tok_s, "seconds": secs}


def headline(res: dict) -> str:
    """The target line: runtime decode at W4A4 over torch FP32 eager."""
    label, want = TARGET
    t = res["tok_s"]
    if f"runtime {label}" not in t:
        return f"runtime {label} not measured"
    r = t[f"runtime {label}"]["decode"] / t[TORCH_FP32]["decode"]
    return f"runtime {label} decode {r:.2f}x torch FP32 eager (target >= {want:g}x: {'met' if r >= want else 'missed'})"


def markdown(res: dict, title: str = "") -> str:
    """Tokens/s per label and the side-by-side ratios over both torch peers."""
    t = res["tok_s"]
    f32, i8 = t[TORCH_FP32], t[TORCH_INT8]
    lines = [f"\n### Host tokens/s{': ' + title if title else ''}, prefill {res['prefill']} / greedy decode "
             f"{res['decode']} tokens, {res['threads']} thread(s), median of {res['reps']} ({res['host']['machine']}, "
             f"runtime build {res['runtime_target']})\n",
             "| path | prefill tokens/s | decode tokens/s | prefill vs torch FP32 | decode vs torch FP32 | "
             "prefill vs torch int8 | decode vs torch int8 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, v in t.items():
        lines.append(f"| {label} | {v['prefill']:.1f} | {v['decode']:.1f} | {v['prefill'] / f32['prefill']:.2f}x | "
                     f"{v['decode'] / f32['decode']:.2f}x | {v['prefill'] / i8['prefill']:.2f}x | "
                     f"{v['decode'] / i8['decode']:.2f}x |")
    lines.append(f"\n{headline(res)}.")
    lines += [f"Not timed: {label}: {why}." for label, why in res["skipped"].items()]
    return "\n".join(lines) + "\n"


def _notes(res: dict) -> str:
    tb = res["torch"]
    return (f"\nTorch {tb['torch']}, {res['threads']} thread(s) (the C runtime is single-threaded). torch FP32 eager: HF "
            f"model, attention '{res['attention']}', linears {tb['fp32_matmul']}. torch int8 dynamic: "
            f"{tb['int8_dynamic']} on every nn.Linear including the head (the runtime's head is float). Runtime: "
            f"IntegerRuntime.prefill/step through ctypes on the host build. Host: "
            f"{res['host'].get('model', res['host']['machine'])}, {res['host']['cpus']} CPUs.\n")


def main(argv: list[str] | None = None) -> int:
    from squat.kernels.bench import variant_label
    from squat.kernels.runtime_bench import VARIANTS, paper_export

    ap = argparse.ArgumentParser(prog="python -m squat.kernels.peers", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", action="append", choices=["llama_58m", "gpt2_97m", "tiny_llama", "tiny_gpt2"],
                     help="the paper's shapes with random weights (repeatable), every runtime variant")
    src.add_argument("--export", help="one trained export, beside the torch peers and baselines of its own weights")
    ap.add_argument("--only", action="append", default=None, help="restrict to these runtime variants (W8A8 ... W4A4)")
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="work folder: exports, peers.json, peers.md")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    if a.export:
        runs["export"] = ({variant_label(a.export): Path(a.export)}, Path(a.export))
    for model in a.model or []:
        labels = [k for k in VARIANTS if not a.only or k in a.only]
        exports = {k: paper_export(model, VARIANTS[k], out / f"{model}_{k}") for k in labels}
        runs[model] = (exports, exports[labels[-1]])
    results = {name: measure(ex, base, a.prefill, a.decode, a.reps, a.threads) for name, (ex, base) in runs.items()}
    md = "".join(markdown(r, name) for name, r in results.items()) + _notes(next(iter(results.values())))
    (out / "peers.json").write_text(json.dumps(results, indent=1))
    (out / "peers.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
