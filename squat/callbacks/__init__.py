"""Lightning callbacks."""
from squat.callbacks.kernel_benchmark import KernelBenchmark

__all__ = ["KernelBenchmark"]
