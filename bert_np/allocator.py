"""Keep freed activation memory in the process instead of handing it back to the OS (glibc only).

A training or inference step allocates its activations, gradients and scratch arrays afresh and
frees them at the end, and the next step asks for the same sizes again. glibc's malloc serves
blocks above a threshold (128 KiB at first) with their own mmap and gives them back with munmap
when freed, and trims the top of its heap once more than a threshold is free there. Either way
the next step's arrays land on pages the kernel must map and zero again, one page fault per 4 KiB
touched. Measured on the 2-core VM of the README (`python bench/profile_step.py` shapes, B=32,
T=128): 15,600 page faults in every BERT-tiny inference step, 50,000 in a BERT-small fine-tuning
step; with the settings below, none after the first steps, and the steps run 1.4x (tiny
inference, median 80 -> 56 ms), 1.2x (tiny fine-tuning, 218 -> 181 ms) and 1.1x (small
fine-tuning) faster. Peak memory is the same,
because it is set by the largest step either way; what changes is that the process keeps its
peak after the work is done.

`keep_freed_memory()` sets, through mallopt(3):
    M_TRIM_THRESHOLD = 1 GiB    free memory at the top of the heap stays there (up to 1 GiB)
    M_MMAP_THRESHOLD = 32 MiB   blocks up to 32 MiB (glibc's maximum) come from the reusable heap
Larger blocks are still mapped per allocation; NumPy asks for huge pages for them, so they cost
one fault per 2 MiB. bert_np calls it on import; set BERT_NP_KEEP_FREED_MEMORY=0 to leave malloc
as it is. On other C libraries (macOS, musl, Windows) it does nothing.
"""
import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1        # the mallopt parameter numbers of glibc's malloc.h
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD_BYTES = 1 << 30
MMAP_THRESHOLD_BYTES = 32 << 20


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says; True if it was applied."""
    if os.environ.get("BERT_NP_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, gnu_get_libc_version = libc.mallopt, libc.gnu_get_libc_version
    except (OSError, AttributeError):                         # not glibc: nothing to tune
        return False
    del gnu_get_libc_version                                  # present only in glibc
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
                and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
