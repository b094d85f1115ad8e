"""Byte-level BPE trained on the training split and cached by content, or any HF tokenizer by path."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from squat.config import TokenizerConfig

EOS = "<|endoftext|>"


def docs_hash(docs) -> str:
    h = hashlib.sha256()
    for doc in docs:
        for seg in doc:
            h.update(seg.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def get_tokenizer(cfg: TokenizerConfig, train_docs, cache_dir: str | Path) -> PreTrainedTokenizerFast:
    """Load ``cfg.path`` if given, else train (or reuse) a byte-level BPE keyed by text and settings."""
    if cfg.path is not None:
        try:
            tok = AutoTokenizer.from_pretrained(cfg.path)
        except (OSError, ValueError) as e:
            raise OSError(f"data.tokenizer.path={cfg.path!r}: no tokenizer could be loaded there "
                          f"({type(e).__name__}): point it at a folder with tokenizer.json (e.g. a run's model/ "
                          "folder), a hub id reachable from here, or drop it to train a BPE on the training text") from None
        if tok.eos_token is None:
            raise ValueError(f"tokenizer {cfg.path} has no EOS token; squat separates documents with it")
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok
    key = hashlib.sha256(
        json.dumps([docs_hash(train_docs), cfg.vocab_size, cfg.min_frequency]).encode()
    ).hexdigest()[:16]
    path = Path(cache_dir) / "tokenizers" / key / "tokenizer.json"
    if path.is_file():
        return _wrap(Tokenizer.from_file(str(path)))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((seg for doc in train_docs for seg in doc), trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tok.save(str(tmp))
    tmp.replace(path)
    return _wrap(tok)


def token_byte_lengths(tokenizer) -> list[int]:
    """UTF-8 bytes each token id stands for (0 for special tokens), for bits-per-byte.

    A byte-level BPE token string maps one character to one byte; other tokenizers are decoded id by id.
    """
    special = set(tokenizer.all_special_ids)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    byte_level = isinstance(getattr(tokenizer, "backend_tokenizer", None), Tokenizer) and isinstance(
        tokenizer.backend_tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel
    )
    out = []
    for i, t in enumerate(vocab):
        if i in special or t is None:
            out.append(0)
        elif byte_level:
            out.append(len(t))
        else:
            out.append(len(tokenizer.decode([i]).encode("utf-8")))
    return out
