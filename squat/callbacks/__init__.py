"""Lightning callbacks."""
from squat.callbacks.final_eval import FinalEvaluation
from squat.callbacks.kernel_benchmark import KernelBenchmark
from squat.callbacks.training_guards import FiniteLossGuard, FlushLogsAtCheckpoint, NonFiniteLoss, StepSeed

__all__ = ["FinalEvaluation", "FiniteLossGuard", "FlushLogsAtCheckpoint", "KernelBenchmark", "NonFiniteLoss", "StepSeed"]
