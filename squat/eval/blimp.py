"""BLiMP zero-shot: a pair is right when log P(good) > log P(bad), summed over the sentence's tokens.

Reads the BabyLM-filtered JSON-lines files (one per phenomenon: ``sentence_good``, ``sentence_bad``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
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


def line_bits_per_byte(model, tokenizer, lines: list[str], batch_size: int = 8) -> dict[str, float]:
    """Each line scored on its own (after EOS, no other context): bits per UTF-8 byte and per-token ppl. Batches
    of 8: a batch is padded to its longest line, so paragraph-long lines in 64-line batches cost a quantized
    student memory by the tens of GB (an OOM kill after training, 2026-12-07); scores do not depend on the batch
    (tests/test_qat_pipeline.py)."""
    lines = [l.rstrip("\n") for l in lines if l.strip()]
    nll = -float(sentence_logprobs(model, tokenizer, lines, batch_size).sum())
    n_tok = sum(len(tokenizer(l, add_special_tokens=False)["input_ids"]) for l in lines)
    n_bytes = sum(len(l.encode("utf-8")) for l in lines)
    return {"bpb": nll / math.log(2) / n_bytes, "ppl": math.exp(nll / n_tok), "lines": len(lines)}


def read_blimp(blimp_dir: str | Path, max_pairs: int | None = None) -> dict[str, list[dict]]:
    """Every phenomenon file's pairs, checked before any is scored: a malformed line or an empty file is named
    (file and line). With ``max_pairs``, that many pairs spread evenly over each file (files are ordered by
    paradigm, so the first N would come from one or two paradigms and misestimate the phenomenon)."""
    files = sorted(Path(blimp_dir).glob("*.json")) + sorted(Path(blimp_dir).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no BLiMP *.json / *.jsonl files in {blimp_dir}")
    out = {}
    for f in files:
        rows = []
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{f}:{n}: not a JSON line ({e.msg}): each line must be one object with "
                                 "sentence_good and sentence_bad") from None
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("sentence_good", "sentence_bad")):
                raise ValueError(f"{f}:{n}: needs string fields sentence_good and sentence_bad")
            rows.append(row)
        if not rows:
            raise ValueError(f"{f} holds no BLiMP pairs: remove it from {blimp_dir} or fill it")
        if max_pairs is not None and max_pairs < len(rows):
            rows = [rows[i] for i in np.linspace(0, len(rows) - 1, max_pairs).round().astype(int)]
        out[f.stem] = rows
    return out


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
    acc = {}
    for name, rows in read_blimp(blimp_dir, max_pairs).items():
        good = sentence_logprobs(model, tokenizer, [r["sentence_good"] for r in rows], batch_size)
        bad = sentence_logprobs(model, tokenizer, [r["sentence_bad"] for r in rows], batch_size)
        acc[name] = float((good > bad).double().mean() * 100)  # a tie is not a preference for the good sentence
    acc["average"] = sum(acc.values()) / len(acc)
    return acc
