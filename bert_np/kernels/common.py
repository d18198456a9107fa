"""What every kernel module shares: the dtypes the kernels are compiled for, and the thread pool.

Numba's parallel loops run on its "workqueue" thread pool unless NUMBA_THREADING_LAYER says
otherwise. Between two matrix products OpenBLAS's own threads keep spinning for a while, and an
OpenMP pool started beside them fights them for the cores. Measured on 2 cores, B=32, T=128:
BERT-tiny fine-tuning step 11,000 tokens/s with OpenMP, 17,700 with workqueue; BERT-small
inference 4,900 vs 6,300.
"""
import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

FLOAT_TYPES = ("float32", "float64")


def supported(*arrays):
    """True if all arrays share one dtype the kernels are compiled for; otherwise the wrapper calls
    the NumPy reference, which then applies NumPy's promotion rules."""
    dtype = arrays[0].dtype
    return dtype.name in FLOAT_TYPES and all(a.dtype == dtype for a in arrays)
