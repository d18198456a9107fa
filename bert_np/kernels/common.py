"""What every kernel module shares: the dtypes, the thread pool and the vector width of the kernels.

Numba's parallel loops run on its "workqueue" thread pool unless NUMBA_THREADING_LAYER says
otherwise. Between two matrix products OpenBLAS's own threads keep spinning for a while, and an
OpenMP pool started beside them fights them for the cores. Measured on 2 cores, B=32, T=128:
BERT-tiny fine-tuning step 11,000 tokens/s with OpenMP, 17,700 with workqueue; BERT-small
inference 4,900 vs 6,300.

On CPUs with AVX-512, LLVM's default tuning ("prefer-256-bit") vectorises with 256-bit registers,
half the width the hardware has. The GEMM micro-kernel is written for one 512-bit vector per tile
row, so unless NUMBA_CPU_FEATURES is set this module asks for the host's features without that
preference (measured: 8 x 16 float32 micro-kernel 81 -> 160 GFLOP/s on one core). It must happen
before Numba compiles or loads its first function in the process; the choice is also written to
the environment, where Numba re-reads its configuration, and Numba's cache keeps a separate entry
per feature string.
"""
import os

import llvmlite.binding
import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


def _features_without_256_bit_preference() -> str | None:
    """The host's CPU features plus "-prefer-256-bit" on AVX-512 machines, None elsewhere."""
    features = llvmlite.binding.get_host_cpu_features()
    return features.flatten() + ",-prefer-256-bit" if features.get("avx512f") else None


if "NUMBA_CPU_FEATURES" not in os.environ and (_wide := _features_without_256_bit_preference()):
    os.environ["NUMBA_CPU_FEATURES"] = numba.config.CPU_FEATURES = _wide

FLOAT_TYPES = ("float32", "float64")


def supported(*arrays):
    """True if all arrays share one dtype the kernels are compiled for; otherwise the wrapper calls
    the NumPy reference, which then applies NumPy's promotion rules."""
    dtype = arrays[0].dtype
    return dtype.name in FLOAT_TYPES and all(a.dtype == dtype for a in arrays)
