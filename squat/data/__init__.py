"""Data: text sources, tokenizer, cached token ids and the LightningDataModule."""
from squat.data.datamodule import TextDataModule

__all__ = ["TextDataModule"]
