"""bert_np.kernels.common: the thread pool of the Numba kernels.

Checked in fresh interpreters, since the choice is made once per process: with libgomp present the
kernels run on Numba's OpenMP layer, the spin count bert_np hands libgomp is taken out of the
environment again (processes started later keep their own defaults), a spin count or threading
layer the user set is left alone, a libgomp already loaded by someone else (PyTorch brings its
own) sends the kernels to the workqueue pool, and a parallel kernel still computes the reference's
result on that pool.
"""
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import ctypes, os, sys
    if "--load-libgomp-first" in sys.argv:             # as `import torch` does before bert_np
        ctypes.CDLL("libgomp.so.1")
    import numpy as np
    from bert_np.kernels import common, layernorm
    from bert_np.layers import layernorm as reference
    import numba
    x = np.random.default_rng(0).standard_normal((64, 32))
    w, b = np.ones(32), np.zeros(32)
    y = layernorm.layernorm_forward(x, w, b, 1e-12)[0]     # a prange kernel: starts the pool
    same = np.allclose(y, reference.layernorm_forward.reference(x, w, b, 1e-12)[0], atol=1e-12)
    print(numba.threading_layer(), os.environ.get("GOMP_SPINCOUNT", "unset"), same)
""")


def libgomp_loads():
    """True if Numba's OpenMP pool can be loaded here (it needs the system's libgomp)."""
    probe = "import numba.np.ufunc.omppool"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def run_probe(*args, **env):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER")}
    result = subprocess.run([sys.executable, "-c", PROBE, *args], env=environment | env,
                            capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.skipif(not libgomp_loads(), reason="no libgomp: bert_np uses the workqueue pool")
def test_kernels_run_on_openmp_and_the_environment_is_restored():
    assert run_probe() == ["omp", "unset", "True"]


def test_a_spin_count_set_by_the_user_is_kept():
    layer = "omp" if libgomp_loads() else "workqueue"
    assert run_probe(GOMP_SPINCOUNT="5000") == [layer, "5000", "True"]


def test_a_threading_layer_set_by_the_user_is_used():
    assert run_probe(NUMBA_THREADING_LAYER="workqueue") == ["workqueue", "unset", "True"]


@pytest.mark.skipif(not libgomp_loads(), reason="no libgomp: bert_np uses the workqueue pool")
def test_a_libgomp_loaded_before_bert_np_sends_the_kernels_to_workqueue():
    """That libgomp read its spin count (300,000 by default) when it was loaded, and Numba's pool
    would run on it: slower than workqueue (common.py's docstring has the figures)."""
    assert run_probe("--load-libgomp-first") == ["workqueue", "unset", "True"]


@pytest.mark.skipif(not libgomp_loads(), reason="no libgomp: bert_np uses the workqueue pool")
def test_a_libgomp_loaded_first_with_a_spin_count_set_keeps_openmp():
    assert run_probe("--load-libgomp-first", GOMP_SPINCOUNT="10000") == ["omp", "10000", "True"]
