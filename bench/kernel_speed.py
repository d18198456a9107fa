"""Numba kernels against their NumPy references, on the shapes of BERT tiny..base at B=32, T=128.

GEMM: GFLOP/s of the Numba GEMM and of np.matmul (OpenBLAS) for the three products of a Linear
layer, and their ratio. Softmax, LayerNorm, GELU: the speed-up of the fused kernel over the NumPy
reference, forward and backward; the fused attention core against the reference's four
operations. Every figure is the best of several runs, the kernel and the
reference alternating, because a shared virtual machine's speed drifts from second to second.
The first lines say how long loading the kernels took: compilation on the first run, the on-disk
cache (cache=True) afterwards.

    python bench/kernel_speed.py            # float32, the dtype used for training
OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when it loads; unset them for this command if
they are set (they can select a slower kernel); the BLAS kernel in use is printed below.
"""
import math
import os
import platform
import time

# OpenBLAS with its own default spin (2^28 cycles), not the short one bert_np.tune_process() sets
# (bert_np/kernels/process.py): with the short one its workers are asleep when each timed call starts,
# and waking them made OpenBLAS's small products read 5-20x slower than they run warm.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "28")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from bert_np import kernels
from bert_np.kernels.gemm import matmul
from bert_np.config import PRESETS
from bert_np.layers import activations, attention, layernorm
from bert_np.kernels.process import tune_process

tune_process()          # malloc as bert-np sets it; the OpenBLAS timeout above is kept

B, T = 32, 128
N = B * T
DTYPE = np.float32
REPEATS = 5


def settled_time(fn, settle=0.25):
    """Wall time of one call of fn, after `settle` seconds of rest and one untimed call.

    After a call returns, OpenBLAS keeps its worker threads spinning (for up to ~0.1 s by default;
    bert_np.tune_process() shortens that, see bert_np/kernels/process.py), and a call of either
    library made in that time shares the cores with them (Numba's pool sleeps at once). The rest
    lets them go idle; the untimed call warms the caches.
    """
    time.sleep(settle)
    fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(fn_a, fn_b, repeats=REPEATS):
    """Best settled wall time of fn_a and of fn_b, alternating them `repeats` times."""
    best_a = best_b = float("inf")
    for _ in range(repeats):
        best_a = min(best_a, settled_time(fn_a))
        best_b = min(best_b, settled_time(fn_b))
    return best_a, best_b


def machine():
    try:
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i['internal_api']} {i.get('architecture', '?')} kernel, "
                         f"{i['num_threads']} threads" for i in threadpool_info()
                         if i["user_api"] == "blas")
    except ImportError:
        blas = "threadpoolctl not installed"
    env = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; numpy "
            f"{np.__version__} ({blas}); OPENBLAS env {env or 'unset'}; numba {numba.__version__}, "
            f"{numba.get_num_threads()} threads ({numba.threading_layer()} layer)")


def load_kernels():
    start = time.perf_counter()
    kernels._load_kernels()
    return time.perf_counter() - start


def gemm_shapes():
    """(label, rows, in, out) of the Linear layers of each preset; small and medium share theirs."""
    seen = {}
    for name, (_, H, _) in PRESETS.items():
        if name != "large":
            seen.setdefault(H, []).append(name)
    for H, names in seen.items():
        label = "/".join(names)
        yield f"{label} H->H", N, H, H
        yield f"{label} H->4H", N, H, 4 * H
        yield f"{label} 4H->H", N, 4 * H, H


def gemm_rows(rng):
    for label, n, d_in, d_out in gemm_shapes():
        x = rng.standard_normal((n, d_in), dtype=DTYPE)
        w = rng.standard_normal((d_out, d_in), dtype=DTYPE)
        dy = rng.standard_normal((n, d_out), dtype=DTYPE)
        gflop = 2 * n * d_in * d_out / 1e9
        for product, a, b in (("x W^T", x, w.T), ("dY^T X", dy.T, x), ("dY W", dy, w)):
            t_numba, t_blas = best_of(lambda: matmul(a, b), lambda: np.matmul(a, b))
            yield label, product, gflop / t_numba, gflop / t_blas, t_blas / t_numba


def fused_rows(rng, preset="base"):
    """(op, shape, speed-up forward, speed-up backward, speed-up forward + backward)."""
    _, H, A = PRESETS[preset]
    scores = rng.standard_normal((B, A, T, T), dtype=DTYPE)
    mask = attention.padding_mask_bias((rng.random((B, T)) < 0.9).astype(np.int64), DTYPE)
    scale = 1.0 / math.sqrt(H // A)                          # a Python float, as in attention.py
    x_h = rng.standard_normal((N, H), dtype=DTYPE)
    x_i = rng.standard_normal((N, 4 * H), dtype=DTYPE)
    w, b = rng.standard_normal(H, dtype=DTYPE), rng.standard_normal(H, dtype=DTYPE)
    cases = {
        f"softmax (B,A,T,T)=({B},{A},{T},{T})": (
            attention.attention_softmax_forward, (scores, mask, scale),
            attention.attention_softmax_backward, lambda y: (scores, y, scale)),
        f"layernorm ({N},{H})": (
            layernorm.layernorm_forward, (x_h, w, b, 1e-12),
            layernorm.layernorm_backward, lambda out: (x_h, out[1])),
        f"gelu ({N},{4 * H})": (
            activations.gelu_forward, (x_i,),
            activations.gelu_backward, lambda out: (x_i, out[1])),
    }
    for label, (fwd, fwd_args, bwd, bwd_args) in cases.items():
        kernel_fwd, kernel_bwd = kernels._kernels[fwd.op_name], kernels._kernels[bwd.op_name]
        out = fwd.reference(*fwd_args)
        t_kf, t_rf = best_of(lambda: kernel_fwd(*fwd_args), lambda: fwd.reference(*fwd_args))
        t_kb, t_rb = best_of(lambda: kernel_bwd(*bwd_args(out)), lambda: bwd.reference(*bwd_args(out)))
        yield label, t_rf / t_kf, t_rb / t_kb, (t_rf + t_rb) / (t_kf + t_kb), t_kf + t_kb, t_rf + t_rb


def attention_rows(rng):
    """(preset, job, unfused ms, fused ms, speed-up) of the attention core, S = Q K^T through
    C = dropout(softmax(...)) V with the heads merged: the fused kernel against the reference's
    four operations, each running what "auto" gives it (np.matmul, the softmax and dropout kernels).
    Inference keeps no probabilities and has no dropout; training keeps P and P' with p = 0.1."""
    for preset in ("tiny", "base"):
        _, H, A = PRESETS[preset]
        q, k, v = (attention.split_heads(rng.standard_normal((B, T, H), dtype=DTYPE), A)
                   for _ in range(3))
        mask = attention.padding_mask_bias((rng.random((B, T)) < 0.9).astype(np.int64), DTYPE)
        scale = 1.0 / math.sqrt(H // A)
        fused = kernels._kernels["attention_context_forward"]
        for job, p, keep in (("inference", 0.0, False), ("training", 0.1, True)):
            def run(op):
                return lambda: op(q, k, v, mask, scale, p, np.random.default_rng(0) if p else None,
                                  keep)
            t_fused, t_ref = best_of(run(fused), run(attention.attention_context_forward.reference))
            yield preset, job, 1e3 * t_ref, 1e3 * t_fused, t_ref / t_fused


def main():
    load_time = load_kernels()
    rng = np.random.default_rng(0)
    print(f"machine: {machine()}")
    print(f"loading the kernels: {load_time:.1f} s (compiles on the first run, then the cache)")
    print(f"\nGEMM, float32, {N} rows (B={B}, T={T}); GFLOP/s, best of {REPEATS}")
    print(f"{'layer':<26}{'product':<9}{'numba':>8}{'OpenBLAS':>10}{'ratio':>8}")
    for label, product, g_numba, g_blas, ratio in gemm_rows(rng):
        print(f"{label:<26}{product:<9}{g_numba:8.1f}{g_blas:10.1f}{ratio:8.2f}")
    print("\nFused kernels vs NumPy reference, float32, BERT-base shapes; speed-up (x)")
    print(f"{'op':<34}{'fwd':>7}{'bwd':>7}{'fwd+bwd':>9}{'numba ms':>10}{'numpy ms':>10}")
    for label, s_f, s_b, s_fb, t_k, t_r in fused_rows(rng):
        print(f"{label:<34}{s_f:7.2f}{s_b:7.2f}{s_fb:9.2f}{1e3 * t_k:10.1f}{1e3 * t_r:10.1f}")
    print("\nAttention core (forward), fused kernel vs the four operations of the reference")
    print(f"{'preset':<8}{'job':<11}{'unfused ms':>11}{'fused ms':>10}{'speed-up':>10}")
    for preset, job, t_ref, t_fused, speedup in attention_rows(rng):
        print(f"{preset:<8}{job:<11}{t_ref:11.2f}{t_fused:10.2f}{speedup:10.2f}")


if __name__ == "__main__":
    main()
