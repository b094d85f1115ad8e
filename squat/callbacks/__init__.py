"""Lightning callbacks."""
from squat.callbacks.kernel_benchmark import KernelBenchmark
from squat.callbacks.training_guards import FiniteLossGuard, FlushLogsAtCheckpoint, NonFiniteLoss, StepSeed

__all__ = ["FiniteLossGuard", "FlushLogsAtCheckpoint", "KernelBenchmark", "NonFiniteLoss", "StepSeed"]
