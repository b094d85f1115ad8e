"""Where text comes from. Each source returns (train, val) as lists of documents; a document is a list of
segments (lines or paragraphs) that are tokenized independently and concatenated, with EOS between documents.
With ``data.eos_after=line`` every segment becomes a document of its own, its newline replaced by EOS."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from squat.config import DataConfig, DataSource, EosAfter

Docs = List[List[str]]


def builtin_text() -> str:
    """CPython's bundled language reference (``pydoc_data.topics``): real English prose on every machine."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # some distributions strip pydoc_data
        raise RuntimeError(
            "data=builtin needs CPython's pydoc_data module, which this Python lacks: "
            "use data=babylm or data=hf, or a full CPython build"
        ) from e
    return "\n\n".join(topics[k] for k in sorted(topics))


def _builtin(cfg: DataConfig) -> Tuple[Docs, Docs]:
    # Topics repeat whole paragraphs; deduplicate first so no held-out paragraph also appears in training.
    unique = dict.fromkeys(p.strip("\n") for p in builtin_text().split("\n\n") if p.strip())
    paragraphs = [p + "\n\n" for p in unique]
    every = max(2, round(1 / cfg.val_fraction))
    train = [p for i, p in enumerate(paragraphs) if i % every != every - 1]
    val = [p for i, p in enumerate(paragraphs) if i % every == every - 1]
    return [train], [val]


def _read_text(f: Path) -> str:
    try:
        return f.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{f} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 4]!r}): BabyLM folders hold "
                         f"plain-text files only; move it out of {f.parent} or convert it to UTF-8") from None


def _read_lines(files: List[Path]) -> Docs:
    return [[line for line in _read_text(f).splitlines(keepends=True) if line.strip()] for f in files]


def _babylm(cfg: DataConfig) -> Tuple[Docs, Docs]:
    train_files = sorted(Path(cfg.train_dir).glob("*.train"))
    dev_files = sorted(Path(cfg.dev_dir).glob("*.dev"))
    for files, d, ext in ((train_files, cfg.train_dir, "train"), (dev_files, cfg.dev_dir, "dev")):
        if not files:
            raise FileNotFoundError(f"no *.{ext} files in {d}: BabyLM layout has one <domain>.{ext} file per domain")
    return _read_lines(train_files), _read_lines(dev_files)


def _hf(cfg: DataConfig) -> Tuple[Docs, Docs]:
    import datasets

    ds = datasets.load_dataset(cfg.hf_name, cfg.hf_config, data_files=cfg.hf_data_files)
    out = []
    for split in (cfg.hf_train_split, cfg.hf_val_split):
        if split not in ds:
            raise KeyError(f"dataset {cfg.hf_name} has no split {split!r} (has {list(ds)}): set data.hf_*_split")
        col = ds[split][cfg.hf_text_field]
        out.append([[t if t.endswith("\n") else t + "\n" for t in col if t.strip()]])
    return out[0], out[1]


def _truncate(docs: Docs, max_chars: int | None) -> Docs:
    if max_chars is None:
        return docs
    out, n = [], 0
    for doc in docs:
        kept = []
        for seg in doc:
            if n >= max_chars:
                break
            kept.append(seg)
            n += len(seg)
        if kept:
            out.append(kept)
    return out


def load_texts(cfg: DataConfig) -> Tuple[Docs, Docs]:
    loader = {DataSource.builtin: _builtin, DataSource.babylm: _babylm, DataSource.hf: _hf}[DataSource(cfg.source)]
    train, val = loader(cfg)
    return _documents(_truncate(train, cfg.max_train_chars), cfg), _documents(_truncate(val, cfg.max_val_chars), cfg)


def _documents(docs: Docs, cfg: DataConfig) -> Docs:
    if cfg.eos_after == EosAfter.line:
        return [[seg.rstrip("\n")] for doc in docs for seg in doc]
    return docs


def eval_domains(cfg: DataConfig) -> dict[str, Docs]:
    """The eval split by domain (BabyLM: one per ``*.dev`` file), for per-domain scores; {} for other sources."""
    if cfg.source != DataSource.babylm:
        return {}
    return {f.stem: _documents(_read_lines([f]), cfg) for f in sorted(Path(cfg.dev_dir).glob("*.dev"))}
