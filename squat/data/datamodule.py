"""Text -> tokenizer -> token ids (cached on disk) -> fixed-length chunks for Lightning."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

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


class ChunkAt(Dataset):
    """Training chunks by start offset: item ``i`` is ``tokens[i : i + seq_len]``, so every position can start one.
    Which offsets make each batch is :class:`StepBatches`' choice."""

    def __init__(self, tokens: np.ndarray, seq_len: int):
        if len(tokens) <= seq_len:
            raise ValueError(f"{len(tokens)} training tokens cannot fill one chunk of seq_len={seq_len}")
        self.tokens, self.seq_len = tokens, seq_len

    def __len__(self) -> int:
        return len(self.tokens) - self.seq_len + 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.tokens[i : i + self.seq_len].astype(np.int64))


class StepBatches(Sampler):
    """Training batches as a pure function of (seed, global batch number), never of a global RNG or of how many
    processes draw them.

    Global batch ``b`` holds ``batch_size * world`` items: random offsets with replacement (``replacement=True``,
    chunks of a text), or the ``b``-th slice of a per-epoch permutation (fixed sequences). DDP rank ``r`` takes slice
    ``r`` of it, so N processes together see exactly what one process with an N times larger batch sees. ``position``
    tells where an iterator starts (global batch number, rank, world size): after a resume that is the restored
    step, so a run killed at step k continues with the batches an uninterrupted run would have drawn.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, position, replacement: bool = True,
                 epoch_batches: int | None = None):
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.position, self.replacement = position, replacement
        _, _, world = position()
        self.epoch_batches = epoch_batches or max(1, n_items // (batch_size * world))

    def __len__(self) -> int:
        return self.epoch_batches

    def global_batch(self, b: int, world: int) -> np.ndarray:
        g = self.batch_size * world
        if self.replacement:
            return np.random.default_rng([self.seed, b]).integers(0, self.n_items, g)
        epoch, i = divmod(b, self.n_items // g)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_items)[i * g : (i + 1) * g]

    def __iter__(self):
        start, rank, world = self.position()
        for b in range(start, start - start % self.epoch_batches + self.epoch_batches):  # to this epoch's end
            yield self.global_batch(b, world)[rank * self.batch_size : (rank + 1) * self.batch_size].tolist()


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
    def __init__(self, cfg: DataConfig, tokenizer=None, seed: int = 0):
        super().__init__()
        self.cfg, self.seed = cfg, seed
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

    def _position(self) -> tuple[int, int, int]:
        """(global batch number, rank, world size) for a new training iterator: from the Trainer once attached
        (restored on resume), else the start of a single-process run."""
        t = self.trainer
        if t is None:
            return 0, 0, 1
        return t.global_step * t.accumulate_grad_batches, t.global_rank, t.world_size

    def _batches(self) -> StepBatches:
        if self.train_sequences is not None:
            return StepBatches(len(self.train_sequences), self.cfg.batch_size, self.seed, self._position,
                               replacement=False)
        t = self.trainer
        acc = t.accumulate_grad_batches if t is not None else 1
        _, _, world = self._position()
        # an epoch = as many chunks as the text holds, whole optimizer steps of them (so step = batches / acc)
        per_epoch = max(1, (len(self.train_tokens) // self.cfg.seq_len) // (self.cfg.batch_size * world))
        return StepBatches(len(self.train_tokens) - self.cfg.seq_len + 1, self.cfg.batch_size, self.seed,
                           self._position, epoch_batches=max(acc, per_epoch - per_epoch % acc))

    def train_dataloader(self) -> DataLoader:
        ds = Sequences(self.train_sequences) if self.train_sequences is not None else ChunkAt(self.train_tokens,
                                                                                             self.cfg.seq_len)
        return DataLoader(ds, batch_sampler=self._batches(), num_workers=self.cfg.num_workers)

    def first_global_batch(self, world: int) -> torch.Tensor:
        """Global batch 0 as one tensor (all ranks' slices): what quantizers calibrate on, so the initial step sizes
        do not depend on the number of processes."""
        ds = Sequences(self.train_sequences) if self.train_sequences is not None else ChunkAt(self.train_tokens,
                                                                                             self.cfg.seq_len)
        return torch.stack([ds[int(i)] for i in self._batches().global_batch(0, world)])

    def val_dataloader(self) -> DataLoader:
        ds = ContiguousChunks(self.val_tokens, self.cfg.seq_len, self.cfg.max_val_chunks)
        t = self.trainer
        if t is not None and t.world_size > 1:  # each rank scores its share, no padding; NLLMeter.sync sums them
            ds = Subset(ds, range(t.global_rank, len(ds), t.world_size))
        return DataLoader(ds, batch_size=self.cfg.eval_batch_size, num_workers=self.cfg.num_workers)

    def summary(self) -> dict:
        return {
            "train_tokens": int(len(self.train_tokens)),
            "val_tokens": int(len(self.val_tokens)),
            "vocab_size": self.vocab_size,
        }
