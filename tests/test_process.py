"""bert_np.tune_process: importing bert_np changes nothing in the process; the explicit call does.

Malloc (glibc only). Compared: the process's minor page-fault count (getrusage) per "step" that
allocates, writes and frees a step's worth of activation-sized arrays (84 MiB, one of them larger
than glibc's largest mmap threshold), and for a single freed 64 MiB array written again. After a
bare `import bert_np` glibc keeps its defaults: freed memory goes back to the OS and every step maps
thousands of pages again, and a 64 MiB array at least one fault for each of its 32 huge pages of
2 MiB (NumPy asks for huge pages on large arrays; with 4 KiB pages it would be 16,384). After `bert_np.tune_process()` no new page is mapped after the
first steps (the bound allows a few for unrelated interpreter work).

OpenBLAS (Linux, NumPy on OpenBLAS). In a fresh interpreter that starts OpenBLAS's threads (a
product) before importing bert_np, as a user's script does: a bare import leaves the environment
and OpenBLAS's timeout as they were; after tune_process OpenBLAS reports the short timeout (its own
getter, openblas_thread_timeout), the threads it restarts compute a multi-threaded product
correctly (against float64 NumPy, to float32 rounding), and a timeout the user set is left alone.
"""
import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the malloc tuning applies to glibc only (elsewhere keep_freed_memory does nothing)")
openblas_only = pytest.mark.skipif(
    platform.system() != "Linux"
    or "openblas" not in str(np.show_config(mode="dicts")["Build Dependencies"]["blas"]).lower(),
    reason="the timeout concerns NumPy builds on OpenBLAS, found through /proc/self/maps (Linux)")

MALLOC_PROBE = textwrap.dedent("""
    import os, resource, sys, numpy as np
    environment = dict(os.environ)
    import bert_np
    assert dict(os.environ) == environment, "import bert_np changed the environment"
    applied = bert_np.tune_process()["keep_freed_memory"] if sys.argv[1] == "tune" else None
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def step():                                          # a step's activations: 84 MiB alive
        arrays = [np.empty((4096, 128), np.float32) for _ in range(10)]      # 2 MiB each
        arrays += [np.empty((4096, 512), np.float32) for _ in range(2)]      # 8 MiB each
        arrays += [np.empty((4096, 3072), np.float32)]       # 48 MiB: BERT-base's FFN activation
        for a in arrays:
            a.fill(1.0)
    def big():                                           # one 64 MiB array, written and freed
        np.empty(16 << 20, np.float32).fill(1.0)
    for _ in range(3):                                   # the first steps grow the heap
        step()
        big()
    before = faults()
    for _ in range(10):
        step()
    per_step = (faults() - before) // 10
    before = faults()
    for _ in range(10):
        big()
    print(applied, per_step, (faults() - before) // 10)
""")


def run_malloc_probe(mode, opt_out="1"):
    env = dict(os.environ, BERT_NP_KEEP_FREED_MEMORY=opt_out)
    out = subprocess.run([sys.executable, "-c", MALLOC_PROBE, mode], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], int(out[1]), int(out[2])


@glibc_only
def test_a_bare_import_leaves_malloc_alone_and_freed_memory_is_mapped_afresh():
    applied, per_step, per_64mib = run_malloc_probe("import")
    assert applied == "None"
    assert per_step > 1000, f"only {per_step} page faults per step after a bare import"
    assert per_64mib >= 32, f"only {per_64mib} page faults per 64 MiB array after a bare import"


@glibc_only
def test_after_tune_process_freed_memory_is_reused_without_page_faults():
    applied, per_step, per_64mib = run_malloc_probe("tune")
    assert applied == "True"
    assert per_step < 100, f"{per_step} page faults per step with the tuning"
    assert per_64mib < 16, f"{per_64mib} page faults per 64 MiB array with the tuning"


@glibc_only
def test_opt_out_leaves_malloc_alone_and_memory_is_remapped():
    applied, per_step, _ = run_malloc_probe("tune", opt_out="0")
    assert applied == "False"
    assert per_step > 1000, f"only {per_step} page faults per step: the opt-out did not take effect"


OPENBLAS_PROBE = textwrap.dedent("""
    import os, sys
    import numpy as np
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 512, 512), dtype=np.float32)
    a @ b                                                  # OpenBLAS's threads are running
    import bert_np
    from bert_np.kernels.process import loaded_openblas
    if sys.argv[1] == "tune":
        bert_np.tune_process()
    error = np.abs(a @ b - a.astype(np.float64) @ b.astype(np.float64)).max()
    print(loaded_openblas().openblas_thread_timeout(),
          os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset"), error < 1e-3)
""")


def run_openblas_probe(mode, **env):
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    result = subprocess.run([sys.executable, "-c", OPENBLAS_PROBE, mode], env=environment | env,
                            capture_output=True, text=True, check=True)
    return result.stdout.split()


@openblas_only
def test_a_bare_import_leaves_openblas_and_the_environment_alone():
    timeout, variable, correct = run_openblas_probe("import")
    assert variable == "unset" and correct == "True"
    assert timeout != "16", "import bert_np changed OpenBLAS's idle timeout"


@openblas_only
def test_tune_process_sets_the_idle_timeout_and_products_stay_correct():
    assert run_openblas_probe("tune") == ["16", "16", "True"]


@openblas_only
def test_a_timeout_set_by_the_user_is_kept():
    assert run_openblas_probe("tune", OPENBLAS_THREAD_TIMEOUT="20") == ["20", "20", "True"]


def test_importing_bert_np_loads_neither_scipy_nor_numba():
    """An inference process pays for what it runs: SciPy (the reference GELU's erf, ~26 MB
    resident) is imported at the reference's first call, Numba with the first kernel."""
    code = "import sys, bert_np; print(sorted({'scipy', 'numba'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
