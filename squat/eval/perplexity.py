"""Perplexity and bits per byte of a causal LM over a dataloader of token chunks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sum_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Summed next-token negative log-likelihood of ``ids`` (float32, over all B x (T-1) predictions)."""
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")


class NLLMeter:
    """Accumulates summed NLL, predicted tokens and their UTF-8 bytes; reports loss, ppl and bits per byte."""

    def __init__(self, token_bytes: torch.Tensor | None = None):
        self.token_bytes = token_bytes
        self.nll = self.tokens = self.bytes = 0.0

    def update(self, logits: torch.Tensor, ids: torch.Tensor) -> None:
        self.nll += float(sum_nll(logits, ids))
        self.tokens += ids[:, 1:].numel()
        if self.token_bytes is not None and self.token_bytes.numel():
            self.bytes += float(self.token_bytes.to(ids.device)[ids[:, 1:]].sum())

    @classmethod
    def merged(cls, meters: list["NLLMeter"]) -> "NLLMeter":
        """One meter over the union of what ``meters`` saw (e.g. the whole split from its domains)."""
        out = cls()
        for m in meters:
            out.nll, out.tokens, out.bytes = out.nll + m.nll, out.tokens + m.tokens, out.bytes + m.bytes
        return out

    def sync(self) -> "NLLMeter":
        """Sum over DDP ranks, each of which scored its own share of the split; a no-op in one process."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([self.nll, self.tokens, self.bytes], dtype=torch.float64)
            torch.distributed.all_reduce(t)
            self.nll, self.tokens, self.bytes = t.tolist()
        return self

    def compute(self) -> dict[str, float]:
        if not self.tokens:
            return {}
        loss = self.nll / self.tokens
        out = {"loss": loss, "ppl": math.exp(min(loss, 50.0))}
        if self.bytes:
            out["bpb"] = self.nll / math.log(2) / self.bytes
        return out


@torch.no_grad()
def score(model: torch.nn.Module, dataloader, meter: NLLMeter, max_batches: int | None = None) -> NLLMeter:
    was_training = model.training
    model.eval()
    for i, batch in enumerate(dataloader):
        if max_batches is not None and i >= max_batches:
            break
        meter.update(model(input_ids=batch).logits, batch)
    model.train(was_training)
    return meter.sync()


def evaluate(model: torch.nn.Module, dataloader, token_bytes: torch.Tensor | None = None, max_batches: int | None = None) -> dict[str, float]:
    return score(model, dataloader, NLLMeter(token_bytes), max_batches).compute()
