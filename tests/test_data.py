"""Text sources, tokenizer, token cache and chunking."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squat.config import DataConfig, TokenizerConfig
from squat.data import TextDataModule
from squat.data import datamodule as dm_mod
from squat.data.datamodule import ChunkAt, ContiguousChunks, StepBatches, cached_tokens
from squat.data.sources import builtin_text, eval_domains, load_texts
from squat.data.tokenizer import get_tokenizer, token_byte_lengths


def small_cfg(tmp_path, **kw) -> DataConfig:
    base = dict(max_train_chars=40000, max_val_chars=10000, seq_len=32, cache_dir=str(tmp_path / "cache"),
                tokenizer=TokenizerConfig(vocab_size=300))
    base.update(kw)
    return DataConfig(**base)


def test_builtin_text_is_real_english_and_split_is_deterministic_and_disjoint():
    text = builtin_text()
    assert len(text) > 400_000 and text.count(" the ") > 3000
    cfg = DataConfig()
    tr1, va1 = load_texts(cfg)
    tr2, va2 = load_texts(cfg)
    assert tr1 == tr2 and va1 == va2
    train_set, val_set = set(tr1[0]), set(va1[0])
    assert not train_set & val_set
    assert 0.07 < sum(map(len, va1[0])) / sum(map(len, tr1[0])) < 0.13


def test_tokenizer_round_trip_and_byte_lengths(tmp_path):
    cfg = small_cfg(tmp_path)
    train, val = load_texts(cfg)
    tok = get_tokenizer(cfg.tokenizer, train, cfg.cache_dir)
    assert len(tok) == 300
    sample = "".join(val[0][:20]) + "naïve café → ünïcödé"
    ids = tok(sample, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == sample
    lengths = token_byte_lengths(tok)
    assert sum(lengths[i] for i in ids) == len(sample.encode("utf-8"))
    assert lengths[tok.eos_token_id] == 0


def test_tokenizer_is_cached_by_content(tmp_path):
    cfg = small_cfg(tmp_path)
    train, _ = load_texts(cfg)
    get_tokenizer(cfg.tokenizer, train, cfg.cache_dir)
    files = list((tmp_path / "cache" / "tokenizers").glob("*/tokenizer.json"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    get_tokenizer(cfg.tokenizer, train, cfg.cache_dir)
    assert files[0].stat().st_mtime_ns == mtime
    get_tokenizer(cfg.tokenizer, [["different text\n"] * 50], cfg.cache_dir)
    assert len(list((tmp_path / "cache" / "tokenizers").glob("*/tokenizer.json"))) == 2


def test_token_cache_is_reused_and_keyed_by_text(tmp_path, monkeypatch):
    cfg = small_cfg(tmp_path)
    train, _ = load_texts(cfg)
    tok = get_tokenizer(cfg.tokenizer, train, cfg.cache_dir)
    first = cached_tokens(tok, train, cfg.cache_dir)

    def boom(*a, **k):
        raise AssertionError("tokenized again despite a cache hit")

    monkeypatch.setattr(dm_mod, "tokenize_docs", boom)
    np.testing.assert_array_equal(cached_tokens(tok, train, cfg.cache_dir), first)
    with pytest.raises(AssertionError, match="tokenized again"):
        cached_tokens(tok, [["other words\n"]], cfg.cache_dir)


def test_documents_are_separated_by_eos(tmp_path):
    cfg = small_cfg(tmp_path)
    train, _ = load_texts(cfg)
    tok = get_tokenizer(cfg.tokenizer, train, cfg.cache_dir)
    ids = dm_mod.tokenize_docs(tok, [["a b\n"], ["c d\n"]])
    assert list(ids).count(tok.eos_token_id) == 2 and ids[-1] == tok.eos_token_id


def test_contiguous_chunks_are_deterministic_and_cover_the_split():
    tokens = np.arange(1000, dtype=np.uint16)
    ds = ContiguousChunks(tokens, 64)
    assert len(ds) == 15
    chunks = torch.stack([ds[i] for i in range(len(ds))])
    assert torch.equal(chunks.flatten(), torch.arange(960))
    assert torch.equal(ds[3], ds[3])


def test_training_chunks_have_random_in_range_offsets():
    tokens = np.arange(1000, dtype=np.uint16)
    ds = ChunkAt(tokens, 64)
    batches = StepBatches(len(ds), 8, seed=0, position=lambda: (0, 0, 1), epoch_batches=25)
    starts = [i for b in batches for i in b]
    assert len(set(starts)) > 50 and min(starts) >= 0 and max(starts) <= 1000 - 64
    for i in starts[:50]:
        assert torch.equal(ds[i], torch.arange(i, i + 64))
    with pytest.raises(ValueError, match="seq_len"):
        ChunkAt(tokens[:10], 64)


@pytest.mark.parametrize("replacement", [True, False])
def test_step_batches_resume_mid_epoch_and_split_over_ranks(replacement):
    """The batch of step b depends on (seed, b) only: an iterator started at step 7 (a resumed run) continues with
    what an uninterrupted one draws there, and 2 ranks with batch 4 together draw one rank's batch of 8."""
    def sampler(pos, bs=8):
        return StepBatches(400, bs, seed=3, position=lambda: pos, replacement=replacement, epoch_batches=10)

    full = list(sampler((0, 0, 1)))
    assert len(full) == 10 and len({tuple(b) for b in full}) == 10
    assert list(sampler((7, 0, 1))) == full[7:]
    assert list(sampler((10, 0, 1))) != full  # the next epoch draws anew
    halves = zip(sampler((0, 0, 2), bs=4), sampler((0, 1, 2), bs=4))
    assert [a + b for a, b in halves] == full
    if not replacement:  # an epoch of a permutation holds no item twice
        seen = [i for b in full for i in b]
        assert len(seen) == len(set(seen)) == 80


def test_binary_file_in_a_babylm_folder_is_named(tmp_path):
    (tmp_path / "tr").mkdir()
    (tmp_path / "dv").mkdir()
    (tmp_path / "tr" / "a.train").write_text("the cat sat\n" * 20)
    (tmp_path / "tr" / "b.train").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 10)
    (tmp_path / "dv" / "a.dev").write_text("the cat ran\n" * 10)
    cfg = small_cfg(tmp_path, source="babylm", train_dir=str(tmp_path / "tr"), dev_dir=str(tmp_path / "dv"))
    with pytest.raises(ValueError, match=r"b\.train is not UTF-8 text"):
        load_texts(cfg)


def test_babylm_layout(tmp_path):
    (tmp_path / "tr").mkdir()
    (tmp_path / "dv").mkdir()
    (tmp_path / "tr" / "a.train").write_text("the cat sat\n\nthe dog ran\n" * 200)
    (tmp_path / "tr" / "b.train").write_text("a bird flew\n" * 200)
    (tmp_path / "dv" / "a.dev").write_text("the cat ran\n" * 100)
    cfg = small_cfg(tmp_path, source="babylm", train_dir=str(tmp_path / "tr"), dev_dir=str(tmp_path / "dv"))
    train, val = load_texts(cfg)
    assert len(train) == 2 and train[0][0] == "the cat sat\n" and "\n" not in train[0]  # blank lines dropped
    dm = TextDataModule(cfg).prepare()
    assert list(dm.train_tokens).count(dm.tokenizer.eos_token_id) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"\*\.train"):
        load_texts(small_cfg(tmp_path, source="babylm", train_dir=str(tmp_path / "empty"), dev_dir=str(tmp_path / "dv")))


def test_eos_after_line_makes_every_line_a_document(tmp_path):
    (tmp_path / "tr").mkdir()
    (tmp_path / "dv").mkdir()
    (tmp_path / "tr" / "a.train").write_text("the cat sat\nthe dog ran\n" * 200)
    (tmp_path / "dv" / "a.dev").write_text("the cat ran\n" * 100)
    cfg = small_cfg(tmp_path, source="babylm", train_dir=str(tmp_path / "tr"), dev_dir=str(tmp_path / "dv"),
                    eos_after="line")
    train, val = load_texts(cfg)
    assert train[:2] == [["the cat sat"], ["the dog ran"]] and len(train) == 400 and len(val) == 100
    dm = TextDataModule(cfg).prepare()
    eos, tok = dm.tokenizer.eos_token_id, dm.tokenizer
    assert list(dm.val_tokens).count(eos) == 100 and tok.decode(dm.val_tokens[:4]).startswith("the cat ran")
    per_line = len(tok("the cat ran", add_special_tokens=False)["input_ids"]) + 1
    assert len(dm.val_tokens) == 100 * per_line  # the newline is gone: EOS stands for it
    with pytest.raises(ValueError, match="EosAfter"):
        small_cfg(tmp_path, eos_after="sentence")


def test_eval_domains_partition_the_babylm_dev_split(tmp_path):
    (tmp_path / "tr").mkdir()
    (tmp_path / "dv").mkdir()
    (tmp_path / "tr" / "a.train").write_text("the cat sat\n" * 10)
    (tmp_path / "dv" / "b.dev").write_text("a bird flew\n\nit sang\n")
    (tmp_path / "dv" / "a.dev").write_text("the cat ran\n" * 3)
    for eos_after in ("line", "document"):
        cfg = small_cfg(tmp_path, source="babylm", train_dir=str(tmp_path / "tr"), dev_dir=str(tmp_path / "dv"),
                        eos_after=eos_after)
        domains = eval_domains(cfg)
        assert list(domains) == ["a", "b"]
        assert domains["a"] + domains["b"] == load_texts(cfg)[1]
    assert domains["b"] == [["a bird flew\n", "it sang\n"]]
    assert eval_domains(small_cfg(tmp_path)) == {}


def test_hf_source_through_datasets_on_local_files(tmp_path):
    (tmp_path / "train.txt").write_text("one two three four\n" * 300)
    (tmp_path / "val.txt").write_text("four three two one\n" * 100)
    cfg = small_cfg(
        tmp_path,
        source="hf",
        hf_name="text",
        hf_data_files={"train": str(tmp_path / "train.txt"), "validation": str(tmp_path / "val.txt")},
    )
    dm = TextDataModule(cfg).prepare()
    assert dm.tokenizer.decode(dm.val_tokens[:4].astype(int).tolist()).startswith("four three")
    batch = next(iter(dm.val_dataloader()))
    assert batch.shape == (min(cfg.eval_batch_size, len(dm.val_tokens) // 32), 32)


def test_capped_eval_chunks_spread_over_the_whole_split():
    tokens = np.arange(6400, dtype=np.uint16)
    ds = ContiguousChunks(tokens, 64, max_chunks=10)
    firsts = [int(ds[i][0]) for i in range(len(ds))]
    assert len(ds) == 10 and firsts[0] == 0 and firsts[-1] == 99 * 64
    assert all(b - a >= 64 * 10 for a, b in zip(firsts, firsts[1:]))  # evenly spaced, not the first ten
    assert len(ContiguousChunks(tokens, 64, max_chunks=1000)) == 100
