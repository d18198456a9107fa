"""Process tuning for a training or inference run: applied by `bert-np` and the benchmarks, or by
one explicit call, `bert_np.tune_process()`; never on import.

Two settings, both process-wide, which is why the library does not apply them by itself (they
would change the behaviour of every other library in a Jupyter kernel or a user's program too):

1. Keep freed memory in the heap (glibc only). A step allocates its activations, gradients and
   scratch arrays afresh, frees them at the end, and the next step asks for the same sizes again.
   By default glibc serves blocks above a threshold (128 KiB at first, at most 32 MiB) with their
   own mmap and hands them back with munmap when freed, and trims the top of its heap once enough
   is free there; either way the next step's arrays land on pages the kernel must map and zero
   again, one page fault per 4 KiB touched. Through mallopt(3):
       M_MMAP_MAX = 0          no block gets a mapping of its own: all come from the heap
       M_TRIM_THRESHOLD = -1   the heap is never trimmed: freed memory stays for the next step
   (glibc still maps memory when the heap cannot grow, so large requests do not fail.) Peak memory
   is unchanged, since the largest step sets it either way; the process keeps its peak afterwards.
   Measured on the 2-core VM of the README (B=32, T=128): 15,600 page faults in every BERT-tiny
   inference step and 72,600 (1.8 s of kernel time) in a 10 s BERT-base fine-tuning step without
   it; none with it, and the steps 1.4x (tiny inference) and 1.2x (base fine-tuning) faster.
   BERT_NP_KEEP_FREED_MEMORY=0 in the environment leaves malloc alone.

2. Let OpenBLAS's idle threads sleep soon (Linux, NumPy on OpenBLAS). After a multi-threaded
   product OpenBLAS's workers busy-wait for up to 2^28 cycles (~0.1 s) before they sleep. A step
   alternates products (np.matmul) with Numba kernels that use every core, so spinning workers take
   the cores from the kernels that follow (BERT-tiny's attention kernel: 6.1 ms right after a
   product, 3.5 ms after an idle pause). OPENBLAS_THREAD_TIMEOUT=16 makes them sleep after 2^16
   cycles (tens of microseconds); waking them costs a few microseconds per product. OpenBLAS reads
   the variable when it starts its threads, which NumPy's import already did, so the library NumPy
   loaded is asked to re-read its environment and to stop its threads; the next product starts them
   with the new timeout. A timeout the user set (OpenBLAS accepts 4 to 30) is left as it is.

The third setting a run depends on, the spin of the Numba kernels' OpenMP threads, is chosen when
the kernels are first loaded (kernels/common.py) and changes no environment afterwards.
"""
import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1        # the mallopt parameter numbers of glibc's malloc.h
M_MMAP_MAX = -4
NEVER_TRIM = -1              # M_TRIM_THRESHOLD = -1 turns trimming off (mallopt(3))
NO_MAPPED_BLOCKS = 0
TIMEOUT_VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
IDLE_TIMEOUT = 16            # log2 of the CPU cycles an OpenBLAS worker spins before it sleeps


def tune_process() -> dict:
    """Apply both settings of the module docstring; returns which of them took effect."""
    return {"keep_freed_memory": keep_freed_memory(),
            "openblas_idle_timeout": let_idle_threads_sleep()}


def keep_freed_memory() -> bool:
    """Setting 1: glibc's malloc keeps freed memory; True if it was applied."""
    if os.environ.get("BERT_NP_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, gnu_get_libc_version = libc.mallopt, libc.gnu_get_libc_version
    except (OSError, AttributeError):                         # not glibc: nothing to tune
        return False
    del gnu_get_libc_version                                  # present only in glibc
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) and mallopt(M_MMAP_MAX, NO_MAPPED_BLOCKS))


def loaded_openblas():
    """The OpenBLAS shared library already mapped into this process (NumPy's), or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:                                            # not Linux
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)                        # the mapped copy, not a new one
            if hasattr(library, "openblas_read_env") and hasattr(library, "blas_thread_shutdown_"):
                return library
        except OSError:
            continue
    return None


def let_idle_threads_sleep() -> bool:
    """Setting 2: OpenBLAS's idle workers sleep after 2^16 cycles; True if OpenBLAS now uses it."""
    if TIMEOUT_VARIABLE in os.environ:
        return False
    os.environ[TIMEOUT_VARIABLE] = str(IDLE_TIMEOUT)
    library = loaded_openblas()
    if library is None:
        return False
    library.openblas_read_env()
    library.blas_thread_shutdown_()
    return library.openblas_thread_timeout() == IDLE_TIMEOUT
