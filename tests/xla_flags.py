"""XLA flags of the test suite's processes: N virtual CPU devices, and XLA's cheap CPU compile pipeline.

The tests train tiny models, so compiling their programs, not running them, is most of what the suite costs.
Backend optimisation level 0 without LLVM's expensive passes about halves that: tests/train/test_loop.py took 121 s
of CPU (82 s wall) with XLA's defaults and 55 s (52 s) with these, on an idle 2-core machine. Every process of the
suite (pytest's workers, the subprocesses and notebook kernels the tests start) uses the same flags, so
comparisons between them are unaffected; `make run`, the studies and the benchmarks keep XLA's defaults.
"""
CHEAP_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a test process with `devices` virtual CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {CHEAP_COMPILE}"
