"""``squat-generate``: prompt in, text out, from an integer export through the C runtime, with tokens/s.

The tokenizer is the run's own (saved beside the model by ``squat-train``): ``tokenizer=``, else the export folder,
else ``model/`` next to it (a run writes ``<run>/model`` and ``<run>/export``).
"""
from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from squat.config import CONF_DIR, GenerateConfig, register_configs
from squat.utils import task_wrapper, to_typed

register_configs()


def tokenizer_dir(gc: GenerateConfig) -> Path:
    if gc.tokenizer is not None:
        return Path(gc.tokenizer)
    export = Path(gc.export_dir)
    for d in (export, export.parent / "model"):
        if (d / "tokenizer_config.json").is_file():
            return d
    raise FileNotFoundError(f"no tokenizer in {export} or {export.parent / 'model'}: pass tokenizer=<the run's "
                            "model/ folder> (squat-train saves the tokenizer there)")


def run_generate(gc: GenerateConfig) -> dict:
    """Greedy decoding with the KV cache; returns the text, the token ids and prefill / decode tokens per second."""
    from transformers import AutoTokenizer

    from squat.kernels.runtime import IntegerRuntime

    tok = AutoTokenizer.from_pretrained(tokenizer_dir(gc))
    ids = tok(gc.prompt).input_ids or [tok.eos_token_id]
    rt = IntegerRuntime(gc.export_dir, max_seq=gc.max_seq or len(ids) + gc.max_new_tokens)
    eos = tok.eos_token_id if gc.stop_at_eos else None
    t0 = time.perf_counter()
    logits = rt.prefill(ids)
    t1 = time.perf_counter()
    new = rt.decode(logits, gc.max_new_tokens, eos)
    t2 = time.perf_counter()
    steps = len(new) - 1  # the first new token comes from the prefill
    return {
        "prompt": gc.prompt, "text": tok.decode(new), "prompt_tokens": len(ids), "new_tokens": new,
        "prefill_tokens_per_s": len(ids) / max(t1 - t0, 1e-9),
        "decode_tokens_per_s": steps / (t2 - t1) if steps else float("nan"),
    }


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="generate")
@task_wrapper
def main(cfg: DictConfig) -> None:
    res = run_generate(to_typed(cfg))
    print(res["prompt"] + res["text"])
    print(f"prefill {res['prompt_tokens']} tokens: {res['prefill_tokens_per_s']:.1f} tokens/s; "
          f"decode {len(res['new_tokens'])} tokens: {res['decode_tokens_per_s']:.1f} tokens/s")


if __name__ == "__main__":
    main()
