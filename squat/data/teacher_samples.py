"""LLM-QAT's data-free distillation data: token sequences sampled from the teacher, cached on disk.

Each sequence starts from a uniformly random vocabulary token, continues with ``greedy_tokens`` top-1 tokens and
then samples from the teacher's softmax at ``temperature`` (LLM-QAT, Liu et al. 2023): the student then learns the
teacher's own distribution without the training text. Sampling does not stop at EOS, so every sequence has the
full length. The cache key covers the teacher's weights, the settings and the length, so a changed teacher
regenerates.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from squat.config import TeacherSamplesConfig
from squat.utils import plain

log = logging.getLogger("squat")


def _weights_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def sample_sequences(teacher: torch.nn.Module, cfg: TeacherSamplesConfig, seq_len: int, vocab_size: int) -> np.ndarray:
    """``[num_sequences, seq_len]`` token ids sampled from ``teacher`` with the KV cache."""
    was_training = teacher.training
    teacher.eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    out = []
    for start in range(0, cfg.num_sequences, cfg.batch_size):
        b = min(cfg.batch_size, cfg.num_sequences - start)
        ids = torch.randint(0, vocab_size, (b, 1), generator=gen)
        past, step_in = None, ids
        for t in range(seq_len - 1):
            res = teacher(input_ids=step_in, past_key_values=past, use_cache=True)
            past = res.past_key_values
            logits = res.logits[:, -1].float()
            if t < cfg.greedy_tokens:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(torch.softmax(logits / cfg.temperature, -1), 1, generator=gen)
            ids = torch.cat([ids, nxt], dim=1)
            step_in = nxt
        out.append(ids)
    teacher.train(was_training)
    return torch.cat(out).numpy().astype(np.int64)


def teacher_samples(teacher: torch.nn.Module, cfg: TeacherSamplesConfig, seq_len: int, vocab_size: int,
                    cache_dir: str | Path) -> np.ndarray:
    """Cached :func:`sample_sequences`."""
    key = hashlib.sha256(json.dumps([_weights_hash(teacher), plain(cfg), seq_len, vocab_size]).encode()).hexdigest()[:20]
    path = Path(cache_dir) / "teacher_samples" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    log.info("sampling %d sequences of %d tokens from the teacher (LLM-QAT data-free data; cached in %s)",
             cfg.num_sequences, seq_len, path)
    seqs = sample_sequences(teacher, cfg, seq_len, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, seqs)
    tmp.replace(path)
    return seqs
