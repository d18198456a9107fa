"""Numba compilation: only what a run calls, for the dtype it uses, and said when it happens.

In a fresh interpreter with an empty Numba cache (NUMBA_CACHE_DIR in a temporary folder), one
float64 LayerNorm through the dispatcher must compile exactly one kernel, the LayerNorm rows for
float64, announce it on standard error with its name and dtype, and import no other kernel module
(GELU, AdamW) than the one it needs. The same call in a second interpreter loads the kernel from the
cache and prints nothing.
"""
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    import bert_np
    from bert_np.layers import layernorm_forward
    x = np.random.default_rng(0).standard_normal((4, 8))
    layernorm_forward(x, np.ones(8), np.zeros(8), 1e-12)
    from bert_np.kernels import layernorm
    print(sorted(layernorm._layernorm_rows.dispatchers),
          sorted(layernorm._layernorm_backward_rows.dispatchers),
          "bert_np.kernels.gelu" in sys.modules, "bert_np.kernels.optim" in sys.modules)
""")


def run(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), BERT_NP_BACKEND="auto")
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                            check=True, timeout=300)
    return result.stdout.strip(), result.stderr


def test_a_run_compiles_only_what_it_calls_and_says_so(tmp_path):
    stdout, stderr = run(tmp_path)
    assert stdout == "['float64'] [] False False"
    assert "compiling the Numba kernels this run uses" in stderr
    assert "compiled _layernorm_rows (float64)" in stderr
    assert "float32" not in stderr
    stdout, stderr = run(tmp_path)                        # the second run loads the cache
    assert stdout == "['float64'] [] False False"
    assert "compil" not in stderr, stderr
