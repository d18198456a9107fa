"""Keep freed activation memory in the process instead of handing it back to the OS (glibc only).

A training or inference step allocates its activations, gradients and scratch arrays afresh and
frees them at the end, and the next step asks for the same sizes again. glibc's malloc serves
blocks above a threshold (128 KiB at first, at most 32 MiB) with their own mmap and gives them
back with munmap when freed, and trims the top of its heap once more than a threshold is free
there. Either way the next step's arrays land on pages the kernel must map and zero again, one
page fault per 4 KiB touched (per 2 MiB for the huge pages NumPy asks for on large arrays).
Measured on the 2-core VM of the README (B=32, T=128), before any tuning: 15,600 page faults in
every BERT-tiny inference step, 50,000 in a BERT-small fine-tuning step. With heap blocks up to
32 MiB and a 1 GiB trim threshold (the first version of this module) those went to none, and the
steps ran 1.4x (tiny inference, median 80 -> 56 ms) and 1.2x (tiny fine-tuning, 218 -> 181 ms)
faster. Blocks over 32 MiB were still mapped per allocation: BERT-base's (4096, 3072) FFN
activations, medium's (4096, 2048) ones, the MLM logits. That cost 72,600 faults and 1.8 s of
kernel time in a 10 s BERT-base fine-tuning step, 0.16 s of a 1.0 s BERT-medium inference step;
with every block on the heap and no trimming: 3 faults, 8.4 s (base fine-tuning); 0 faults,
0.90 s (medium inference); BERT-small pretraining 2.06 -> 1.87 s. Peak memory is the same,
because it is set by the largest step either way; what changes is that the process keeps its
peak after the work is done.

`keep_freed_memory()` sets, through mallopt(3):
    M_MMAP_MAX = 0              no block gets a mapping of its own: all come from the heap
    M_TRIM_THRESHOLD = -1       the heap is never trimmed: freed memory stays for the next step
(glibc still maps memory when the heap cannot grow, so large requests do not fail.) bert_np calls
it on import; set BERT_NP_KEEP_FREED_MEMORY=0 to leave malloc as it is. On other C libraries
(macOS, musl, Windows) it does nothing.
"""
import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1        # the mallopt parameter numbers of glibc's malloc.h
M_MMAP_MAX = -4
NEVER_TRIM = -1              # M_TRIM_THRESHOLD = -1 turns trimming off (mallopt(3))
NO_MAPPED_BLOCKS = 0


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
    return bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) and mallopt(M_MMAP_MAX, NO_MAPPED_BLOCKS))
