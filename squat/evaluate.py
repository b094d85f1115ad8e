"""``squat-eval``: perplexity and bits per byte of a saved model (float or quantized student) on a data
config's eval split (fixed-length chunks, per domain where the data has domains, and line by line: each line
scored alone), BLiMP accuracy when ``blimp_dir`` is given, and any lm-evaluation-harness task (``harness_tasks``)."""
from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from squat.config import CONF_DIR, EvalConfig, register_configs
from squat.data import TextDataModule
from squat.data.datamodule import ContiguousChunks, cached_tokens
from squat.data.sources import eval_domains
from squat.eval.blimp import eval_lines, evaluate_blimp, line_bits_per_byte
from squat.eval.perplexity import NLLMeter, score
from squat.quant.prepare import load_quantized
from squat.utils import task_wrapper, to_typed

register_configs()


def run_eval(ec: EvalConfig) -> dict:
    tok = AutoTokenizer.from_pretrained(ec.model_path)
    model = load_quantized(ec.model_path)
    dm = TextDataModule(ec.data, tokenizer=tok).prepare()
    res = {"model_path": ec.model_path, "data": str(ec.data.source), **dm.summary()}
    meters = {}
    for name, docs in eval_domains(ec.data).items():  # chunked within each domain; the whole split is their union
        chunks = DataLoader(ContiguousChunks(cached_tokens(tok, docs, ec.data.cache_dir), ec.data.seq_len),
                            ec.data.eval_batch_size)
        meters[name] = score(model, chunks, NLLMeter(dm.token_bytes), ec.max_batches)
    total = NLLMeter.merged(list(meters.values())) if meters else score(
        model, dm.val_dataloader(), NLLMeter(dm.token_bytes), ec.max_batches)
    res.update({f"val/{k}": v for k, v in total.compute().items()})
    for name, m in meters.items():
        res.update({f"val_{name}/{k}": v for k, v in m.compute().items()})
    if ec.line_eval_max_lines:
        res.update({f"val_lines/{k}": v for k, v in line_bits_per_byte(model, tok, eval_lines(ec.data, ec.line_eval_max_lines)).items()})
    if ec.blimp_dir:
        res.update({f"blimp/{k}": v for k, v in evaluate_blimp(model, tok, ec.blimp_dir, ec.blimp_max_pairs).items()})
    out = Path(ec.output_dir)
    if ec.harness_blimp:
        from squat.eval.harness import harness_blimp

        res.update({f"harness_blimp/{k}": v for k, v in harness_blimp(model, tok, ec.blimp_dir, out / "harness_tasks").items()})
    if ec.harness_tasks:
        from squat.eval.harness import run_harness

        for task, metrics in run_harness(model, tok, ec.harness_tasks, limit=ec.harness_limit).items():
            res.update({f"harness/{task}/{k}": v for k, v in metrics.items()})
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(res, indent=2))
    return res


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
@task_wrapper
def main(cfg: DictConfig) -> None:
    res = run_eval(to_typed(cfg))
    for k, v in res.items():
        print(f"{k:32s} {v:.4f}" if isinstance(v, float) else f"{k:32s} {v}")


if __name__ == "__main__":
    main()
