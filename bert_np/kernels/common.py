"""What every kernel module shares: the dtypes, compilation per dtype on first use with a notice,
the thread pool and the vector width of the kernels.

Compilation. Each kernel has one signature per float dtype; `njit_per_dtype` compiles the one a
call needs the first time it is needed (or loads it from Numba's on-disk cache), so a float32 run
never compiles the float64 code and a run compiles only the kernels it calls. A real compilation
(not a cache load) is announced on standard error, with the kernel's name, dtype and time, because
it can take a minute on a fresh install and nothing else would explain the pause.

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
  - A libgomp already in the process (PyTorch loads its own when imported) was set up with the
    default spin, and Numba's pool would run on it: then the kernels take the workqueue pool,
    unless GOMP_SPINCOUNT is set. Measured with torch imported first, B=32 T=128 unless said:
    BERT-tiny fine-tuning 141 (that libgomp) / 110 (workqueue) / 102 ms (OpenMP, short spin),
    BERT-mini fine-tuning 600 / 528 / 485 ms, MiniLM fine-tuning at B=16 T=14 196 / 144 / 128 ms.

On CPUs with AVX-512, LLVM's default tuning ("prefer-256-bit") vectorises with 256-bit registers,
half the width the hardware has. The GEMM micro-kernel is written for one 512-bit vector per tile
row, so unless NUMBA_CPU_FEATURES is set this module asks for the host's features without that
preference (measured: 8 x 16 float32 micro-kernel 81 -> 160 GFLOP/s on one core). It must happen
before Numba compiles or loads its first function in the process; the choice is also written to
the environment, where Numba re-reads its configuration, and Numba's cache keeps a separate entry
per feature string.

Cache. Numba's cache stamps a kernel with its own file only; cache.py clears the package's cached
kernels when any of their source files changed, before the first one loads.
"""
import os
import sys
import time
from pathlib import Path

import llvmlite.binding
import numba
import numpy as np
from numba.core import event
from numba.core.caching import FunctionCache

from . import cache

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


def _libgomp_already_loaded() -> bool:
    """True if this process has mapped a libgomp before bert_np loads its pool (Linux only)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


if "NUMBA_THREADING_LAYER" not in os.environ:
    if "GOMP_SPINCOUNT" not in os.environ and _libgomp_already_loaded():
        numba.config.THREADING_LAYER = "workqueue"    # that libgomp spins 300,000: see above
    else:
        numba.config.THREADING_LAYER = "omp" if _use_openmp() else "workqueue"


def _features_without_256_bit_preference() -> str | None:
    """The host's CPU features plus "-prefer-256-bit" on AVX-512 machines, None elsewhere."""
    features = llvmlite.binding.get_host_cpu_features()
    return features.flatten() + ",-prefer-256-bit" if features.get("avx512f") else None


if "NUMBA_CPU_FEATURES" not in os.environ and (_wide := _features_without_256_bit_preference()):
    os.environ["NUMBA_CPU_FEATURES"] = numba.config.CPU_FEATURES = _wide


def _refresh_cache() -> None:
    """Clear Numba's cached kernels if any source file they are built from changed (cache.py)."""
    here = Path(__file__).resolve().parent
    cache_dir = FunctionCache(_refresh_cache).cache_path      # where this package's kernels go
    cache.refresh(cache_dir, [*here.glob("*.py"), here.parent / "rng.py"])


_refresh_cache()

FLOAT_TYPES = ("float32", "float64")
_FLOAT_DTYPES = frozenset(np.dtype(t) for t in FLOAT_TYPES)


class _CompileNotice(event.Listener):
    """Writes a line to standard error for each kernel Numba compiles (not for cache loads), and a
    first line saying what is happening. Nested compilations (the helpers a kernel calls) count
    as part of the kernel that asked for them."""

    def __init__(self):
        self.depth, self.started, self.announced = 0, 0.0, False

    def on_start(self, ev):
        self.depth += 1
        if self.depth > 1:
            return
        if not self.announced:
            self.announced = True
            print("\nbert_np: compiling the Numba kernels this run uses, once; later runs load "
                  "them from Numba's cache", file=sys.stderr, flush=True)   # below a progress bar
        self.started = time.perf_counter()

    def on_end(self, ev):
        self.depth -= 1
        if self.depth > 0:
            return
        name = ev.data["dispatcher"].py_func.__name__
        types = ", ".join(sorted({str(getattr(a, "dtype", a)) for a in ev.data["args"]
                                  if hasattr(a, "dtype")}))
        print(f"  compiled {name} ({types}) in {time.perf_counter() - self.started:.1f} s",
              file=sys.stderr, flush=True)


event.register("numba:compile", _CompileNotice())


class PerDtypeKernel:
    """A Numba kernel with one signature per dtype, each compiled the first time a call needs it.

    Called like the plain function; the dtype of its first array argument picks the signature.
    Each dtype gets a dispatcher of its own, compiled for exactly that signature, so no other
    layout or type is ever compiled for it."""

    def __init__(self, function, signatures, options):
        self.function, self.options = function, options
        self.signatures = dict(zip(FLOAT_TYPES, signatures))       # dtype name -> signature
        self.__name__, self.__doc__ = function.__name__, function.__doc__
        self.dispatchers = {}
        self._by_char = {}                                         # dtype.char -> dispatcher

    def dispatcher(self, dtype: str):
        """The compiled kernel for the dtype name `dtype` (compiled, or loaded from the cache)."""
        if dtype not in self.dispatchers:
            self.dispatchers[dtype] = numba.njit([self.signatures[dtype]], **self.options)(
                self.function)
        return self.dispatchers[dtype]

    def __call__(self, *args):
        for a in args:                                     # the first array's dtype
            if isinstance(a, np.ndarray):
                dtype = a.dtype
                break
        kernel = self._by_char.get(dtype.char)             # dtype.name costs ~1 us a call
        if kernel is None:
            kernel = self._by_char[dtype.char] = self.dispatcher(dtype.name)
        return kernel(*args)


def njit_per_dtype(signatures, **options):
    """Decorator: `@njit_per_dtype([f"void({t}[::1])" for t in FLOAT_TYPES], cache=True)` makes a
    PerDtypeKernel; `signatures` lists one Numba signature per dtype of FLOAT_TYPES, in order."""
    return lambda function: PerDtypeKernel(function, signatures, options)




def supported(*arrays):
    """True if all arrays share one dtype the kernels are compiled for; otherwise the wrapper calls
    the NumPy reference, which then applies NumPy's promotion rules. None stands for an optional
    array that is absent (a Linear layer's or an activation's bias) and is not checked."""
    arrays = [a for a in arrays if a is not None]
    dtype = arrays[0].dtype
    return dtype in _FLOAT_DTYPES and all(a.dtype == dtype for a in arrays)
