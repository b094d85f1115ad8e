"""Evaluation: perplexity / bits per byte (and BLiMP)."""
from squat.eval.perplexity import NLLMeter, evaluate, sum_nll

__all__ = ["NLLMeter", "evaluate", "sum_nll"]
