"""Native MKMP / int8 / fp16 GEMM kernels (``native_kernels/``) loaded through ctypes.

Public entry points:

- ``squat.kernels.build.build(preset)`` and ``squat.kernels.build.ToolchainMissing``
- ``squat.kernels.binding.load()`` -> ``KernelLib``
- ``squat.kernels.bench.run_kernel_benchmark(...)`` and the ``squat-bench`` CLI (``squat.kernels.bench:main``)
- ``squat.kernels.runtime.IntegerRuntime(export_dir)``: the whole exported student in C (logits, greedy decoding),
  ``squat.kernels.runtime_bench`` its whole-model instruction counts and ms/token
"""
from squat.kernels.build import ToolchainMissing

__all__ = ["ToolchainMissing"]
