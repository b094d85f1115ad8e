"""BLiMP zero-shot: a pair is right when log P(good) > log P(bad), summed over the sentence's tokens.

Reads the BabyLM-filtered JSON-lines files (one per phenomenon: ``sentence_good``, ``sentence_bad``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from squat.data.sources import load_texts


@torch.no_grad()
def sentence_logprobs(model, tokenizer, sentences: list[str], batch_size: int = 64) -> torch.Tensor:
    """Summed log-probability of each sentence, conditioned on a leading EOS (the document separator)."""
    model.eval()
    eos = tokenizer.eos_token_id
    out = []
    for i in range(0, len(sentences), batch_size):
        enc = [[eos] + tokenizer(s, add_special_tokens=False)["input_ids"] for s in sentences[i : i + batch_size]]
        width = max(map(len, enc))
        ids = torch.full((len(enc), width), eos, dtype=torch.long)
        mask = torch.zeros(len(enc), width, dtype=torch.bool)
        for j, e in enumerate(enc):
            ids[j, : len(e)] = torch.tensor(e)
            mask[j, : len(e)] = True
        logits = model(input_ids=ids, attention_mask=mask.long()).logits[:, :-1].float()
        lp = torch.gather(F.log_softmax(logits, -1), -1, ids[:, 1:, None]).squeeze(-1)
        out.append((lp * mask[:, 1:]).sum(-1))
    return torch.cat(out)


def line_bits_per_byte(model, tokenizer, lines: list[str], batch_size: int = 64) -> dict[str, float]:
    """Each line scored on its own (after EOS, no other context): bits per UTF-8 byte and per-token ppl."""
    lines = [l.rstrip("\n") for l in lines if l.strip()]
    nll = -float(sentence_logprobs(model, tokenizer, lines, batch_size).sum())
    n_tok = sum(len(tokenizer(l, add_special_tokens=False)["input_ids"]) for l in lines)
    n_bytes = sum(len(l.encode("utf-8")) for l in lines)
    return {"bpb": nll / math.log(2) / n_bytes, "ppl": math.exp(nll / n_tok), "lines": len(lines)}


def eval_lines(data_cfg, n: int | None) -> list[str]:
    """Every k-th line of the eval split, ``n`` of them (all with ``n=None``): each is scored alone, after EOS. Blank
    lines are kept here and skipped by the scorer, as ``squat-eval`` does."""
    _, val_docs = load_texts(data_cfg)
    segs = [seg for doc in val_docs for seg in doc]
    if n is None:
        return segs
    return segs[:: max(1, len(segs) // n)][:n]


def evaluate_blimp(model, tokenizer, blimp_dir: str | Path, max_pairs: int | None = None,
                   batch_size: int = 64) -> dict[str, float]:
    """Accuracy per phenomenon (file stem) and their unweighted average, as in the paper's Table I. Sentences are
    scored in right-padded batches; the padding mask reaches the model, so the batch size changes nothing."""
    files = sorted(Path(blimp_dir).glob("*.json")) + sorted(Path(blimp_dir).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no BLiMP *.json / *.jsonl files in {blimp_dir}")
    acc = {}
    for f in files:
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()][:max_pairs]
        good = sentence_logprobs(model, tokenizer, [r["sentence_good"] for r in rows], batch_size)
        bad = sentence_logprobs(model, tokenizer, [r["sentence_bad"] for r in rows], batch_size)
        acc[f.stem] = float((good > bad).double().mean() * 100)  # a tie is not a preference for the good sentence
    acc["average"] = sum(acc.values()) / len(acc)
    return acc
