"""Lightning callbacks."""
from squat.callbacks.final_eval import FinalEvaluation
from squat.callbacks.kernel_benchmark import KernelBenchmark

__all__ = ["FinalEvaluation", "KernelBenchmark"]
