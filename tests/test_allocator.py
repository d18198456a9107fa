"""bert_np.allocator: freed activation memory is reused, not faulted back in, on glibc systems.

Compared: the process's minor page-fault count (getrusage) per "step" that allocates, writes and
frees a step's worth of activation-sized arrays (84 MiB, one of them larger than glibc's largest
mmap threshold), with and without the tuning. Without it glibc hands freed memory back to the OS
and every step maps thousands of pages again; with it no new page is mapped after the first
steps (the bound allows a few for unrelated interpreter work).
"""
import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt tuning applies to glibc only (elsewhere keep_freed_memory does nothing)")

PROBE = textwrap.dedent("""
    import resource, numpy as np
    import bert_np
    from bert_np.allocator import keep_freed_memory
    applied = keep_freed_memory()
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def step():                                          # a step's activations: 84 MiB alive
        arrays = [np.empty((4096, 128), np.float32) for _ in range(10)]      # 2 MiB each
        arrays += [np.empty((4096, 512), np.float32) for _ in range(2)]      # 8 MiB each
        arrays += [np.empty((4096, 3072), np.float32)]       # 48 MiB: BERT-base's FFN activation
        for a in arrays:
            a.fill(1.0)
    for _ in range(3):                                   # the first steps grow the heap
        step()
    before = faults()
    for _ in range(10):
        step()
    print(applied, (faults() - before) // 10)
""")


def run_probe(env_value):
    env = dict(os.environ, BERT_NP_KEEP_FREED_MEMORY=env_value)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_activation_memory_is_reused_without_page_faults():
    applied, faults = run_probe("1")
    assert applied
    assert faults < 100, f"{faults} page faults per step with the tuning"


def test_opt_out_leaves_malloc_alone_and_memory_is_remapped():
    applied, faults = run_probe("0")
    assert not applied
    assert faults > 1000, f"only {faults} page faults per step: the opt-out did not take effect"
