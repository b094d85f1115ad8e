"""Text -> tokenizer -> token ids (cached on disk) -> fixed-length chunks for Lightning."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from squat.config import DataConfig
from squat.data.sources import load_texts
from squat.data.tokenizer import docs_hash, get_tokenizer, token_byte_lengths


def tokenize_docs(tokenizer, docs) -> np.ndarray:
    """All segments are encoded in one batch (parallel in ``tokenizers``) and joined, with EOS after each document."""
    eos = tokenizer.eos_token_id
    encoded = iter(tokenizer([seg for doc in docs for seg in doc], add_special_tokens=False)["input_ids"])
    ids: list[int] = []
    for doc in docs:
        for _ in doc:
            ids.extend(next(encoded))
        ids.append(eos)
    dtype = np.uint16 if len(tokenizer) <= 65535 else np.int32
    return np.asarray(ids, dtype=dtype)


def cached_tokens(tokenizer, docs, cache_dir: str | Path) -> np.ndarray:
    """Token ids for ``docs``, cached under a key of the text and the tokenizer's full definition."""
    tok_def = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else repr(tokenizer)
    key = hashlib.sha256(json.dumps([docs_hash(docs), tok_def]).encode()).hexdigest()[:20]
    path = Path(cache_dir) / "tokens" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    ids = tokenize_docs(tokenizer, docs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, ids)
    tmp.replace(path)
    return ids


class RandomChunks(Dataset):
    """Training chunks at random offsets (a fresh draw each access): every position can start a chunk."""

    def __init__(self, tokens: np.ndarray, seq_len: int):
        if len(tokens) <= seq_len:
            raise ValueError(f"{len(tokens)} training tokens cannot fill one chunk of seq_len={seq_len}")
        self.tokens, self.seq_len = tokens, seq_len

    def __len__(self) -> int:
        return len(self.tokens) // self.seq_len

    def __getitem__(self, i: int) -> torch.Tensor:
        start = int(torch.randint(0, len(self.tokens) - self.seq_len + 1, (1,)))
        return torch.from_numpy(self.tokens[start : start + self.seq_len].astype(np.int64))


class ContiguousChunks(Dataset):
    """Evaluation chunks: consecutive, non-overlapping, deterministic; a short tail is dropped.

    With ``max_chunks`` only that many chunks are kept, evenly spaced over the split, so a cheap in-run
    validation still sees every domain (taking the first batches would see only the first file).
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, max_chunks: int | None = None):
        if len(tokens) < seq_len:
            raise ValueError(f"{len(tokens)} evaluation tokens cannot fill one chunk of seq_len={seq_len}")
        self.tokens, self.seq_len = tokens, seq_len
        n = len(tokens) // seq_len
        self.starts = np.linspace(0, n - 1, min(n, max_chunks)).round().astype(np.int64) if max_chunks else np.arange(n)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> torch.Tensor:
        s = int(self.starts[i]) * self.seq_len
        return torch.from_numpy(self.tokens[s : s + self.seq_len].astype(np.int64))


class Sequences(Dataset):
    """Fixed training sequences, one per item (teacher-generated data: each is a sample of its own)."""

    def __init__(self, seqs: np.ndarray):
        self.seqs = seqs

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.seqs[i].astype(np.int64))


class TextDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig, tokenizer=None):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.train_tokens = self.val_tokens = None
        self.train_sequences: np.ndarray | None = None  # replaces the training text when set (data.train_data=teacher)

    def prepare(self) -> "TextDataModule":
        """Load text, train or load the tokenizer, tokenize (all cached). Idempotent; call before building the model
        so the vocabulary size is known."""
        if self.train_tokens is not None:
            return self
        train_docs, val_docs = load_texts(self.cfg)
        if self.tokenizer is None:
            self.tokenizer = get_tokenizer(self.cfg.tokenizer, train_docs, self.cfg.cache_dir)
        self.train_tokens = cached_tokens(self.tokenizer, train_docs, self.cfg.cache_dir)
        self.val_tokens = cached_tokens(self.tokenizer, val_docs, self.cfg.cache_dir)
        self.token_bytes = torch.tensor(token_byte_lengths(self.tokenizer), dtype=torch.float64)
        return self

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def train_dataloader(self) -> DataLoader:
        if self.train_sequences is not None:
            return DataLoader(Sequences(self.train_sequences), batch_size=self.cfg.batch_size, shuffle=True,
                              num_workers=self.cfg.num_workers, drop_last=True)
        return DataLoader(
            RandomChunks(self.train_tokens, self.cfg.seq_len),
            batch_size=self.cfg.batch_size,
            num_workers=self.cfg.num_workers,
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            ContiguousChunks(self.val_tokens, self.cfg.seq_len, self.cfg.max_val_chunks),
            batch_size=self.cfg.eval_batch_size,
            num_workers=self.cfg.num_workers,
        )

    def summary(self) -> dict:
        return {
            "train_tokens": int(len(self.train_tokens)),
            "val_tokens": int(len(self.val_tokens)),
            "vocab_size": self.vocab_size,
        }
