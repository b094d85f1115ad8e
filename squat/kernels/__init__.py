"""Native MKMP / int8 / fp16 GEMM kernels (``native_kernels/``) loaded through ctypes.

Public entry points:

- ``squat.kernels.build.build(preset)`` and ``squat.kernels.build.ToolchainMissing``
- ``squat.kernels.binding.load()`` -> ``KernelLib``
- ``squat.kernels.bench.run_kernel_benchmark(...)`` and the ``squat-bench`` CLI (``squat.kernels.bench:main``)
"""
from squat.kernels.build import ToolchainMissing

__all__ = ["ToolchainMissing"]
