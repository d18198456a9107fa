"""bert_np.openblas: after `import bert_np`, OpenBLAS's workers use the short idle timeout.

Checked in a fresh interpreter that starts OpenBLAS's threads (a product) before importing
bert_np, as a user's script does: OpenBLAS reports the timeout bert_np set (its own getter,
openblas_thread_timeout), the threads it restarts compute a multi-threaded product correctly
(against float64 NumPy, to float32 rounding), and a timeout the user set is left alone.
"""
import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux"
    or "openblas" not in str(np.show_config(mode="dicts")["Build Dependencies"]["blas"]).lower(),
    reason="the timeout concerns NumPy builds on OpenBLAS, found through /proc/self/maps (Linux)")

PROBE = textwrap.dedent("""
    import os
    import numpy as np
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 512, 512), dtype=np.float32)
    a @ b                                                  # OpenBLAS's threads are running
    import bert_np
    from bert_np.openblas import _loaded_openblas
    error = np.abs(a @ b - a.astype(np.float64) @ b.astype(np.float64)).max()
    print(_loaded_openblas().openblas_thread_timeout(), os.environ["OPENBLAS_THREAD_TIMEOUT"],
          error < 1e-3)
""")


def run_probe(**env):
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    result = subprocess.run([sys.executable, "-c", PROBE], env=environment | env,
                            capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_import_sets_the_idle_timeout_and_products_stay_correct():
    assert run_probe() == ["16", "16", "True"]


def test_a_timeout_set_by_the_user_is_kept():
    assert run_probe(OPENBLAS_THREAD_TIMEOUT="20") == ["20", "20", "True"]
