"""What every kernel module shares: the dtypes, the thread pool and the vector width of the kernels.

Thread pool. Numba's parallel loops run on OpenMP (libgomp) with a short spin, unless
NUMBA_THREADING_LAYER says otherwise, and on Numba's own "workqueue" pool where libgomp is missing.
  - Every `prange` loop is a launch: the pool's threads are woken, run their share and wait for
    the next one. Workqueue threads sleep on a semaphore as soon as they are done, and waking them
    took ~110 us per launch on the VM of the README, whatever the loop (a BERT-tiny inference step
    has 9 launches, a training step dozens).
  - libgomp's threads spin for GOMP_SPINCOUNT iterations before they sleep. Its default (300,000)
    keeps them busy long enough to take the cores from the OpenBLAS product that usually follows
    (BERT-tiny inference 18% slower than workqueue); 10,000 (a few microseconds) covers the gap
    between two kernels and no more.
  - Measured on 2 cores, B=32, T=128, steps of both settings in turns: BERT-tiny inference 33.3
    -> 27.2 ms, BERT-tiny fine-tuning 114 -> 100 ms, BERT-mini pretraining 738 -> 689 ms, BERT-small
    fine-tuning unchanged.
  - libgomp reads GOMP_SPINCOUNT once, when it is loaded. `_use_openmp` sets it (unless the user
    did) around loading Numba's OpenMP pool, then restores the environment, so that processes
    started later (a PyTorch benchmark, say) keep their own defaults.

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

SPIN_COUNT = "10000"   # GOMP_SPINCOUNT: iterations a libgomp thread spins before it sleeps


def _use_openmp() -> bool:
    """Load Numba's OpenMP pool with SPIN_COUNT (see the module docstring); False without libgomp."""
    spin_was = os.environ.get("GOMP_SPINCOUNT")
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
    try:
        import numba.np.ufunc.omppool  # noqa: F401  (loads libgomp, which reads the variable)
        return True
    except (ImportError, OSError):
        return False
    finally:
        if spin_was is None:
            del os.environ["GOMP_SPINCOUNT"]


if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "omp" if _use_openmp() else "workqueue"


def _features_without_256_bit_preference() -> str | None:
    """The host's CPU features plus "-prefer-256-bit" on AVX-512 machines, None elsewhere."""
    features = llvmlite.binding.get_host_cpu_features()
    return features.flatten() + ",-prefer-256-bit" if features.get("avx512f") else None


if "NUMBA_CPU_FEATURES" not in os.environ and (_wide := _features_without_256_bit_preference()):
    os.environ["NUMBA_CPU_FEATURES"] = numba.config.CPU_FEATURES = _wide

FLOAT_TYPES = ("float32", "float64")


def supported(*arrays):
    """True if all arrays share one dtype the kernels are compiled for; otherwise the wrapper calls
    the NumPy reference, which then applies NumPy's promotion rules. None stands for an optional
    array that is absent (a Linear layer's or an activation's bias) and is not checked."""
    arrays = [a for a in arrays if a is not None]
    dtype = arrays[0].dtype
    return dtype.name in FLOAT_TYPES and all(a.dtype == dtype for a in arrays)
