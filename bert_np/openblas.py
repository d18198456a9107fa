"""Let OpenBLAS's idle threads sleep soon after a matrix product instead of spinning (Linux).

After a multi-threaded product OpenBLAS keeps its worker threads busy-waiting for the next one,
for up to 2^28 CPU cycles (~0.1 s) by default, before they go to sleep. A bert_np step alternates
products (np.matmul, OpenBLAS) with Numba kernels that use every core, so the spinning workers
take cores from the kernels that follow. Measured on the 2-core VM of the README: the attention
kernel of BERT-tiny (B=32, T=128) took 6.1 ms right after a product and 3.5 ms after an idle
pause; with the timeout below, 3.4-3.5 ms either way.

`let_idle_threads_sleep()` sets OPENBLAS_THREAD_TIMEOUT=16 (workers sleep after 2^16 cycles, tens
of microseconds; waking them costs a few microseconds per product). OpenBLAS reads the variable
when it starts its threads, which NumPy's import already did; so this also asks the OpenBLAS
library NumPy loaded to re-read its environment and stops its threads, which it starts again, with
the new timeout, at the next product. bert_np calls it on import. A timeout the user set in the
environment is left as it is (OpenBLAS accepts 4 to 30). Without an OpenBLAS in the process (NumPy
built on MKL or Accelerate) or outside Linux it does nothing.
"""
import ctypes
import os

TIMEOUT_VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
IDLE_TIMEOUT = 16             # log2 of the CPU cycles a worker spins before it sleeps


def _loaded_openblas():
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
    """Apply the timeout as the module docstring says; True if OpenBLAS now uses it."""
    if TIMEOUT_VARIABLE in os.environ:
        return False
    os.environ[TIMEOUT_VARIABLE] = str(IDLE_TIMEOUT)
    library = _loaded_openblas()
    if library is None:
        return False
    library.openblas_read_env()
    library.blas_thread_shutdown_()
    return library.openblas_thread_timeout() == IDLE_TIMEOUT
