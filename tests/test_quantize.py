"""Dynamic int8 quantization (bert_np.quantize_dynamic, layers/quantized_linear.py, kernels/int8.py).

Three kinds of comparison:
  1. Kernel against NumPy reference, bit for bit (tolerance 0): the int32 sums are exact integer
     arithmetic on both sides, and the quantization and dequantization are the same float
     operations in the same order (no fused multiply-add), so any difference is a bug.
  2. The int8 layer against the float layer, within a bound derived from the rounding: see
     test_int8_linear_within_the_rounding_bound.
  3. The quantized model against the float32 model, within measured-and-stated bounds: see
     test_quantized_model_close_to_float and test_minilm_quantized_sentence_embeddings.
Round trips (save, load) must give identical outputs (tolerance 0): the file holds the same int8
values and scales.
"""
import contextlib
import io
import json
import re

import numpy as np
import pytest
from safetensors.numpy import load_file

import bert_np
from bert_np import kernels
from bert_np.kernels import feed_forward as kff
from bert_np.kernels import int8 as k8
from bert_np.layers.quantized_linear import (Int8Weight, int8_linear_forward, int8_matmul,
                                             quantize_rows, quantize_weight)
from bert_np.layers import linear_forward
from reference import perturb_params, rel_error

# (N, K, O): 1x1, odd K not a multiple of 4/16/64, N not a multiple of the 4-row tile, O not a
# multiple of the 4-column tile nor of the 256-row cache block, T = 1 (N = B), K past 1024
SHAPES = [(1, 1, 1), (1, 7, 3), (5, 3, 2), (3, 63, 5), (6, 65, 17), (9, 129, 259), (32, 1031, 33),
          (130, 257, 514)]


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def awkward_x(rng, N, K, dtype):
    """Gaussian rows, with row 0 all zero (scale 0), and if N > 2 a row of huge values (1e30)
    and a row with one outlier (its other values round to 0 or +-1)."""
    x = rng.standard_normal((N, K)).astype(dtype)
    x[0] = 0.0
    if N > 2:
        x[1] *= dtype(1e30)
        x[2, 0] = dtype(1e4)
    return x


@pytest.mark.parametrize("N,K,O", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_equals_reference_bit_for_bit(rng, N, K, O, dtype):
    """quantize_rows, int8_matmul (the int32 sums) and int8_linear_forward (dequantized + bias,
    and without bias): kernel == reference exactly, on the shapes above, with an all-zero row,
    a row of 1e30 values, an outlier row, and an all-zero weight row (scale 0)."""
    x = awkward_x(rng, N, K, dtype)
    w = rng.standard_normal((O, K)).astype(dtype)
    w[-1] = 0.0
    b = rng.standard_normal(O).astype(dtype)
    W = quantize_weight(w)
    assert W.scale[-1] == 0 and not W.q[-1].any()
    q_ref, s_ref = quantize_rows.reference(x)
    q_ker, s_ker = k8.quantize_rows(x)
    assert q_ker.dtype == np.int8 and s_ker.dtype == dtype
    np.testing.assert_array_equal(q_ker, q_ref)
    np.testing.assert_array_equal(s_ker, s_ref)
    assert s_ref[0] == 0 and not q_ref[0].any()
    acc_ref = int8_matmul.reference(q_ref, W.q)
    acc_ker = k8.int8_matmul(q_ref, W.q)
    assert acc_ker.dtype == np.int32
    np.testing.assert_array_equal(acc_ker, acc_ref)
    for bias in (b, None):
        y_ref, _ = int8_linear_forward.reference(x, W, bias)
        y_ker, _ = k8.int8_linear_forward(x, W, bias)
        assert y_ker.dtype == y_ref.dtype == dtype
        np.testing.assert_array_equal(y_ker, y_ref)


def test_int8_sums_at_the_extremes_are_exact():
    """Saturated operands: every x_q = +-127 (and -128, which the reference accepts) against
    weights of +-127, K = 4099: the sums reach +-K * 127^2 = 6.6e7 and must equal the int64
    product exactly."""
    K = 4099
    x_q = np.full((5, K), 127, np.int8)
    x_q[1] = -127
    x_q[2] = -128
    x_q[3, ::2] = -127
    w_q = np.full((6, K), -127, np.int8)
    w_q[0] = 127
    w_q[2, 1::3] = 127
    exact = x_q.astype(np.int64) @ w_q.T.astype(np.int64)
    np.testing.assert_array_equal(k8.int8_matmul(x_q, w_q), exact)
    np.testing.assert_array_equal(int8_matmul.reference(x_q, w_q), exact)


def test_quantization_rounds_half_to_even_and_saturates_at_127():
    """The quantization formula itself: x / s exactly on a half rounds to even (np.rint), the
    largest |x| maps to +-127 and no value leaves [-127, 127]."""
    x = np.array([[127.0, 0.5, 1.5, 2.5, -2.5, -127.0, 126.5]], np.float32)   # s = 1
    q, s = k8.quantize_rows(x)
    assert s[0] == 1.0
    np.testing.assert_array_equal(q[0], [127, 0, 2, 2, -2, -127, 126])
    np.testing.assert_array_equal(quantize_rows.reference(x)[0], q)


@pytest.mark.parametrize("N,K,O", [(1, 1, 1), (7, 33, 5), (64, 384, 96)])
def test_int8_linear_within_the_rounding_bound(rng, N, K, O):
    """int8 layer against the float32 layer y = x W^T + b. Rounding moves each x_k by at most
    s_x / 2 and each W_ok by at most s_w[o] / 2, so
        |y_int8 - y| <= s_x/2 sum_k |W_ok| + s_w/2 sum_k |x_k| + K s_x s_w / 4
    (plus float32 rounding of the sums, ~1e-6 relative). The bound is exact, not statistical."""
    x = rng.standard_normal((N, K)).astype(np.float32)
    w = rng.standard_normal((O, K)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    W = quantize_weight(w)
    y, _ = int8_linear_forward(x, W, b)
    y_float = x.astype(np.float64) @ w.T.astype(np.float64) + b
    s_x = np.abs(x).max(1, keepdims=True) / 127                          # (N, 1)
    s_w = W.scale[None, :].astype(np.float64)                             # (1, O)
    bound = (s_x / 2 * np.abs(w).sum(1)[None, :] + s_w / 2 * np.abs(x).sum(1)[:, None]
             + K * s_x * s_w / 4)
    slack = 1e-5 * (np.abs(x) @ np.abs(w).T + np.abs(b))
    assert (np.abs(y - y_float) <= bound + slack).all()


def test_linear_forward_routes_int8_weights_on_every_backend(rng):
    """linear_forward with an Int8Weight gives the int8 layer's result under "numpy", "numba"
    and "auto" (the float GEMM kernel declines an int8 weight), identical on all three."""
    x = rng.standard_normal((2, 3, 20)).astype(np.float32)
    W = quantize_weight(rng.standard_normal((9, 20)).astype(np.float32))
    b = rng.standard_normal(9).astype(np.float32)
    results = []
    for backend in ("numpy", "numba", "auto"):
        with kernels.using_backend(backend):
            y, _ = linear_forward(x, W, b)
        assert y.shape == (2, 3, 9)
        results.append(y)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_compiled_product_uses_the_cpus_dot_product_instructions():
    """What LLVM emitted for the product's inner loop (reported, and checked on CPUs that have
    the instructions): on the portable path vpdpwssd with AVX-512 VNNI / AVX-VNNI, vpmaddwd with
    AVX2 alone; on the VNNI path (CPUs with AVX-512 VNNI) vpdpbusd."""
    import llvmlite.binding
    asm = k8.compiled_asm("float32")
    found = sorted(set(re.findall(r"\b(vpdpbusds?|vpdpwssds?|vpmaddwd|vpmaddubsw|vpmulld)\b", asm)))
    print("int8 product inner loop:", found)
    features = llvmlite.binding.get_host_cpu_features()
    if features.get("avx512vnni") or features.get("avxvnni"):
        assert "vpdpwssd" in found
    elif features.get("avx2"):
        assert {"vpmaddwd", "vpdpwssd"} & set(found)
    if features.get("avx512vnni"):
        vnni = set(re.findall(r"\b(vpdpbusds?|vpdpwssds?|vpmaddwd|vpmulld)\b",
                              k8.compiled_asm("float32", path="vnni")))
        print("int8 product, VNNI path:", sorted(vnni))
        assert "vpdpbusd" in vnni


def test_vnni_path_is_chosen_from_the_host_and_emits_vpdpbusd():
    """The product's path is chosen once per process from the CPU features Numba compiles for:
    "amx" when they include AMX-INT8 and the OS grants the tiles, else "vnni" exactly when they
    include AVX-512 VNNI. On a CPU with AVX-512 VNNI the VNNI path's compiled loop
    must contain vpdpbusd (u8 x s8, 4 products per int32 lane, 64 per instruction) and no
    widening (vpmovzxbd / vpmovsxbd) in its inner loop: the intrinsic is the whole point. Its
    epilogue must not gather or scatter (the loads and stores of a 0-based 1-D row)."""
    import llvmlite.binding
    features = llvmlite.binding.get_host_cpu_features()
    vnni = bool(features.get("avx512vnni"))
    assert ("vnni" in k8.available_paths()) == vnni
    amx = "amx" in k8.available_paths()
    assert not amx or (features.get("amx-int8") and features.get("amx-tile"))
    assert k8.active_path() == ("amx" if amx else "vnni" if vnni else "portable")
    if not vnni:
        pytest.skip("no AVX-512 VNNI on this CPU: the portable path serves")
    asm = k8.compiled_asm("float32", path="vnni")
    lines = asm.splitlines()
    hits = [i for i, line in enumerate(lines) if re.search(r"\bvpdpbusd\b", line)]
    print(f"VNNI path: {len(hits)} vpdpbusd")
    assert len(hits) >= k8.VNNI_MR * k8.VNNI_NV                # the unrolled 4 x 4 register tile
    loop = "\n".join(lines[hits[0]:hits[-1] + 1])
    assert not re.search(r"\bvpmov[sz]xbd\b", loop)
    assert not re.search(r"\bv\w*(gather|scatter)\w*\b", asm)


def test_amx_path_where_the_cpu_and_the_os_allow_it_emits_tdpbusd():
    """On a CPU with AMX-INT8 (and a Linux that grants the tile state) the AMX path is available
    and its compiled loop configures the tiles, loads them, multiplies with tdpbusd (16 x 16 int32
    sums of 64 products u8 x s8 each) and releases them; its epilogue does not gather or
    scatter."""
    import llvmlite.binding
    features = llvmlite.binding.get_host_cpu_features()
    if not (features.get("amx-int8") and features.get("amx-tile")):
        assert "amx" not in k8.available_paths()
        pytest.skip("no AMX-INT8 on this CPU")
    if "amx" not in k8.available_paths():
        pytest.skip("the OS did not grant the AMX tile state (Linux 5.16+ needed)")
    asm = k8.compiled_asm("float32", path="amx")
    found = set(re.findall(r"\b(ldtilecfg|tileloadd|tdpbusd|tilestored|tilerelease)\b", asm))
    print("int8 product, AMX path:", sorted(found))
    assert found == {"ldtilecfg", "tileloadd", "tdpbusd", "tilestored", "tilerelease"}
    assert not re.search(r"\bv\w*(gather|scatter)\w*\b", asm)


def test_packed_weight_layout_and_cache(rng):
    """_pack puts W_q[64 p + c, 4g:4g+4] in the 4 bytes of wp[p, g, c], zeros past O and K,
    64-byte aligned; the packing of a weight is computed once and reused, and a new array (even
    one with the old one's id after it is freed) gets its own."""
    for O, K in [(1, 1), (17, 5), (130, 67)]:
        w_q = rng.integers(-127, 128, (O, K)).astype(np.int8)
        wp = k8._pack(w_q)
        K4, P = (K + 63) // 64 * 16, (O + k8.PANEL - 1) // k8.PANEL     # k in 64-byte steps
        assert wp.shape == (P, K4, k8.PANEL) and wp.dtype == np.int32
        assert wp.ctypes.data % 64 == 0
        b = wp.view(np.int8).reshape(P, K4, k8.PANEL, 4)
        full = np.zeros((P * k8.PANEL, K4 * 4), np.int8)
        full[:O, :K] = w_q
        for p in range(P):
            for g in range(K4):
                np.testing.assert_array_equal(b[p, g], full[p * k8.PANEL:(p + 1) * k8.PANEL,
                                                            4 * g:4 * g + 4])
    w_q = rng.integers(-127, 128, (9, 13)).astype(np.int8)
    first = k8.packed_weight(w_q)
    assert k8.packed_weight(w_q)[0] is first[0]
    np.testing.assert_array_equal(first[1], w_q.sum(1))
    start = first[2].ravel()                                  # where the VNNI path's sums start
    assert first[2].shape == (1, k8.PANEL) and not start[9:].any()
    np.testing.assert_array_equal(start[:9], -128 * w_q.sum(1))
    other = w_q[::-1].copy()
    np.testing.assert_array_equal(k8.packed_weight(other)[1], other.sum(1))
    key = id(w_q)
    del w_q, first
    import gc
    gc.collect()
    assert key not in k8._packed


PATHS = k8.available_paths()
# awkward shapes for the VNNI and AMX layouts: K not a multiple of 4 nor of 64 (the k padding),
# N not a multiple of the 4-row tile, the 16-row A tile, the 32-row block nor the 64-row job, O not
# a multiple of the 16-lane vector (16-channel tile) nor of the 64-channel panel, T = 1 (N = 1),
# K past one 64-group k-block (256 bytes) and past 1024
VNNI_SHAPES = [(N, K, O) for N in (1, 15, 17) for K in (1, 3, 5, 63, 65, 1031) for O in (1, 15, 17)]
VNNI_SHAPES += [(67, 260, 65), (130, 513, 130), (4, 4, 64), (64, 256, 128)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("N,K,O", VNNI_SHAPES)
def test_every_path_equals_reference_bit_for_bit(rng, path, N, K, O):
    """Each product path this CPU can run, forced: int8_matmul and int8_linear_forward (float32,
    with and without bias) equal the NumPy reference exactly, with the awkward rows of
    awkward_x and an all-zero weight row."""
    x = awkward_x(rng, N, K, np.float32)
    w = rng.standard_normal((O, K)).astype(np.float32)
    w[-1] = 0.0
    b = rng.standard_normal(O).astype(np.float32)
    W = quantize_weight(w)
    x_q = rng.integers(-128, 128, (N, K)).astype(np.int8)     # -128 too: the reference accepts it
    with k8.using_path(path):
        np.testing.assert_array_equal(k8.int8_matmul(x_q, W.q), int8_matmul.reference(x_q, W.q))
        q_ker, s_ker = k8.quantize_rows(x)
        q_ref, s_ref = quantize_rows.reference(x)
        np.testing.assert_array_equal(q_ker, q_ref)
        for bias in (b, None):
            y_ref, _ = int8_linear_forward.reference(x, W, bias)
            y_ker, _ = k8.int8_linear_forward(x, W, bias)
            np.testing.assert_array_equal(y_ker, y_ref)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_path_float64_and_3d_input(rng, path, dtype):
    """Each path on (B, T, K) input with T = 1 and T = 7, in both float dtypes: equal to the
    reference bit for bit."""
    W = quantize_weight(rng.standard_normal((70, 45)).astype(dtype))
    b = rng.standard_normal(70).astype(dtype)
    for T in (1, 7):
        x = rng.standard_normal((3, T, 45)).astype(dtype)
        with k8.using_path(path):
            y_ker, _ = k8.int8_linear_forward(x, W, b)
        y_ref, _ = int8_linear_forward.reference(x, W, b)
        assert y_ker.shape == (3, T, 70) and y_ker.dtype == dtype
        np.testing.assert_array_equal(y_ker, y_ref)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("K", [1, 3, 4097, 4099])
def test_every_path_saturated_sums_are_exact(path, K):
    """Saturated operands on each path: x_q in {127, -127, -128} (uint8 255, 1, 0 after the
    offset) against weights of +-127, so every 4-byte group of vpdpbusd is at its extreme
    (4 * 255 * 127), and K up to 4099 (sums +-K * 127^2 and +-K * 128 * 127): exact against the
    int64 product."""
    x_q = np.full((6, K), 127, np.int8)
    x_q[1] = -127
    x_q[2] = -128
    x_q[3, ::2] = -127
    x_q[4, ::3] = -128
    w_q = np.full((18, K), -127, np.int8)
    w_q[0] = 127
    w_q[2, 1::3] = 127
    w_q[17, ::2] = 127
    exact = x_q.astype(np.int64) @ w_q.T.astype(np.int64)
    with k8.using_path(path):
        np.testing.assert_array_equal(k8.int8_matmul(x_q, w_q), exact)


FF_SHAPES = [(1, 1, 1, 1), (5, 3, 7, 2), (31, 65, 70, 17), (33, 130, 129, 66), (70, 64, 200, 33)]


@pytest.mark.parametrize("path", [p for p in PATHS if p != "portable"])
@pytest.mark.parametrize("N,K,I,O", FF_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_feed_forward_kernel_equals_its_three_passes_bit_for_bit(rng, path, N, K, I, O, dtype):
    """The int8 feed-forward kernel (first product, its epilogue making GELU(z)'s quantized rows,
    second product) against the passes it fuses, each the kernel of its own operation:
    int8_linear_forward, gelu_forward, int8_linear_forward: equal bit for bit, with the awkward
    rows of awkward_x, N past one and two 32-row jobs, I and K off every tile width; and close to
    the NumPy reference, whose erf differs from the kernels' by < 5e-7 (a quantized value then
    moves by at most one step)."""
    from bert_np.kernels import gelu
    from bert_np.layers.activations import feed_forward
    x = awkward_x(rng, N, K, dtype)
    if N > 1:
        x[1] = x[1] / dtype(1e27)           # 1e3, not 1e30: rel_error below is relative to max |y|
    wi = quantize_weight((rng.standard_normal((I, K)) / np.sqrt(K)).astype(dtype))
    wo = quantize_weight((rng.standard_normal((O, I)) / np.sqrt(I)).astype(dtype))
    bi, bo = rng.standard_normal(I).astype(dtype), rng.standard_normal(O).astype(dtype)
    with k8.using_path(path):
        y, cache = kff.feed_forward(x, wi, bi, wo, bo, "gelu", keep_cache=False)
        g = gelu.gelu_forward(k8.int8_linear_forward(x, wi, bi)[0])[0]
        for bias in (bo, None):
            np.testing.assert_array_equal(
                kff.feed_forward(x, wi, bi, wo, bias, "gelu", keep_cache=False)[0],
                k8.int8_linear_forward(g, wo, bias)[0])
    assert cache is None and y.dtype == dtype
    with kernels.using_backend("numpy"):
        y_ref, _ = feed_forward(x, wi, bi, wo, bo, "gelu", keep_cache=False)
    assert rel_error(y, y_ref) < 1e-3


def test_feed_forward_kernel_declines_what_it_does_not_fuse(rng):
    """The kernel serves inference with two int8 weights and GELU on the AMX and VNNI paths; a
    cache to keep, another activation, float weights, a missing first bias or the portable path
    go to the reference (the composition of the two layers)."""
    x = rng.standard_normal((4, 8)).astype(np.float32)
    wi, wo = (quantize_weight(rng.standard_normal(s).astype(np.float32)) for s in ((6, 8), (5, 6)))
    bi, bo = np.zeros(6, np.float32), np.zeros(5, np.float32)
    assert kff.feed_forward(x, wi, bi, wo, bo, "gelu") is NotImplemented        # keep_cache
    assert kff.feed_forward(x, wi, bi, wo, bo, "relu", keep_cache=False) is NotImplemented
    assert kff.feed_forward(x, wi, None, wo, bo, "gelu", keep_cache=False) is NotImplemented
    assert kff.feed_forward(x, wi.dequantize(), bi, wo, bo, "gelu",
                           keep_cache=False) is NotImplemented
    with k8.using_path("portable"):
        assert kff.feed_forward(x, wi, bi, wo, bo, "gelu", keep_cache=False) is NotImplemented


def test_quantized_model_runs_the_fused_feed_forward_bit_for_bit(monkeypatch):
    """A quantized model's forward through the feed-forward kernel equals the same forward with
    that kernel removed (each layer's two products, GELU and quantization as separate passes)."""
    q = bert_np.quantize_dynamic(make_model(bert_np.BertForSequenceClassification))
    with kernels.using_backend("auto"):
        fused = q.forward(**batch())["logits"]
        monkeypatch.setattr(kernels, "AUTO_NUMBA", kernels.AUTO_NUMBA - {"feed_forward"})
        np.testing.assert_array_equal(q.forward(**batch())["logits"], fused)


def test_a_cpu_without_vnni_gets_the_portable_path(tmp_path):
    """Compiling for an AVX2-only CPU (NUMBA_CPU_NAME=haswell and its features, in a fresh
    interpreter with its own Numba cache): the process chooses the portable path, whose loop LLVM
    turns into vpmaddwd, never compiles the VNNI kernel, and still equals the reference."""
    import os
    import subprocess
    import sys
    probe = (
        "import re, numpy as np\n"
        "from bert_np.kernels import int8 as k8\n"
        "from bert_np.layers.quantized_linear import quantize_weight, int8_linear_forward\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.standard_normal((7, 33)).astype(np.float32)\n"
        "W = quantize_weight(rng.standard_normal((9, 33)).astype(np.float32))\n"
        "same = np.array_equal(k8.int8_linear_forward(x, W, None)[0],\n"
        "                      int8_linear_forward.reference(x, W, None)[0])\n"
        "asm = k8.compiled_asm('float32')\n"
        "print(k8._path, k8.available_paths(), same, 'vpmaddwd' in asm, 'vpdpbusd' in asm,\n"
        "      sorted(k8._product_vnni.dispatchers) + sorted(k8._product_amx.dispatchers))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_CPU_NAME="haswell",
               NUMBA_CPU_FEATURES="+avx,+avx2,+fma,+bmi,+bmi2,+f16c,+sse4.2,+popcnt")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout.strip()
    assert out == "portable ('portable',) True True False []", out


def test_using_path_refuses_an_unknown_or_unavailable_path():
    with pytest.raises(ValueError, match="not available"):
        with k8.using_path("avx2"):
            pass


# ---- the model contract ---------------------------------------------------------------------

def small_config(**kw):
    fields = dict(vocab_size=80, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=24, num_labels=3)
    fields.update(kw)
    return bert_np.BertConfig(**fields)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((3, 11), dtype=np.int64)
    mask[1, 6:] = 0
    return dict(input_ids=rng.integers(1, 80, (3, 11)), token_type_ids=rng.integers(0, 2, (3, 11)),
                attention_mask=mask)


CLASSES = [bert_np.BertModel, bert_np.BertForSequenceClassification, bert_np.BertForPreTraining,
           bert_np.BertForMaskedLM]


def make_model(cls, seed=1):
    model = cls(small_config(), seed=seed)
    perturb_params(model, seed + 10, 0.05)
    return model


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_quantize_dynamic_keeps_the_class_and_quantizes_the_encoder_linears(cls):
    """Same class, same output names and shapes; exactly the six encoder Linear weights per layer
    are Int8Weight, everything else is the float model's own array; the float model unchanged."""
    model = make_model(cls)
    before = {k: v.copy() for k, v in model.params.items()}
    q = bert_np.quantize_dynamic(model)
    assert type(q) is cls and q.config.extra["quantization"]["method"] == "dynamic_int8"
    assert "quantization" not in model.config.extra
    int8 = sorted(k for k, v in q.params.items() if isinstance(v, Int8Weight))
    assert len(int8) == 6 * model.config.num_hidden_layers
    assert all(re.search(r"encoder\.layer\.\d+\.", k) for k in int8)
    assert all(q.params[k] is model.params[k] for k in model.params if k not in int8)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])
    out_f, out_q = model.forward(**batch()), q.forward(**batch())
    assert out_f.keys() == out_q.keys()
    for k in out_f:
        assert out_q[k].shape == out_f[k].shape and out_q[k].dtype == np.float32


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_quantized_model_close_to_float(cls):
    """Quantized against float32 outputs of the same model (random weights, perturbed): every
    output within 5% of its tensor's scale (rel_error). Why 5%: one int8 layer's error is about
    (max|x|/rms x + max|w|/rms w) / (127 sqrt 12) ~ 1-2% of its output for Gaussian rows (see the
    exact bound above); LayerNorm renormalises after each sublayer, so two layers measured
    0.3-1%; 5% leaves room without hiding a wrong scale or index (those give errors ~100%)."""
    model = make_model(cls)
    out_f, out_q = model.forward(**batch()), bert_np.quantize_dynamic(model).forward(**batch())
    for k in out_f:
        assert rel_error(out_q[k], out_f[k]) < 0.05, k


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_save_and_load_round_trip_is_identical(tmp_path, cls):
    """save_pretrained of a quantized model, from_pretrained of the same class: int8 tensors with
    float32 `<name>_scale` tensors in model.safetensors, the marker in config.json, and outputs
    identical (tolerance 0) after the reload."""
    q = bert_np.quantize_dynamic(make_model(cls))
    q.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantization"]["method"] == "dynamic_int8"
    tensors = load_file(str(tmp_path / "model.safetensors"))
    int8_names = [k for k, v in q.params.items() if isinstance(v, Int8Weight)]
    for k in int8_names:
        assert tensors[k].dtype == np.int8 and tensors[k + "_scale"].dtype == np.float32
    assert not any(k.endswith("_scale") for k in q.params)
    loaded = cls.from_pretrained(tmp_path, strict=True)
    assert sorted(k for k, v in loaded.params.items() if isinstance(v, Int8Weight)) == sorted(int8_names)
    out_q, out_l = q.forward(**batch()), loaded.forward(**batch())
    for k in out_q:
        np.testing.assert_array_equal(out_l[k], out_q[k])
    loaded.save_pretrained(tmp_path / "again")      # and it saves again
    assert cls.from_pretrained(tmp_path / "again").config.extra["quantization"]


def test_a_quantized_task_checkpoint_loads_as_a_quantized_bert_model(tmp_path):
    """The prefix renaming of from_pretrained applies to the int8 weights and their scales."""
    q = bert_np.quantize_dynamic(make_model(bert_np.BertForSequenceClassification))
    q.save_pretrained(tmp_path)
    base = bert_np.BertModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(base.forward(**batch())["last_hidden_state"],
                                  q.forward(**batch())["last_hidden_state"])


@pytest.mark.parametrize("cls", [bert_np.BertForSequenceClassification, bert_np.BertForPreTraining,
                                 bert_np.BertForMaskedLM], ids=lambda c: c.__name__)
def test_loss_and_grads_is_refused(cls):
    """Inference only: loss_and_grads raises TypeError saying so, before any work; an Int8Weight
    refuses to be used as a float array."""
    q = bert_np.quantize_dynamic(make_model(cls))
    labels = {bert_np.BertForSequenceClassification: dict(labels=np.array([0, 1, 2]))}.get(
        cls, dict(labels=np.full((3, 11), 5)))
    with pytest.raises(TypeError, match="inference only"):
        q.loss_and_grads(**batch(), **labels)
    w = next(v for v in q.params.values() if isinstance(v, Int8Weight))
    with pytest.raises(TypeError, match="inference only"):
        np.asarray(w)
    with pytest.raises(ValueError, match="already quantized"):
        bert_np.quantize_dynamic(q)


def test_float_models_are_unaffected(tmp_path):
    """A float model saves no `_scale` tensor and no marker, and trains as before."""
    model = make_model(bert_np.BertForSequenceClassification)
    model.save_pretrained(tmp_path)
    assert "quantization" not in json.loads((tmp_path / "config.json").read_text())
    assert not any(k.endswith("_scale") for k in load_file(str(tmp_path / "model.safetensors")))
    loss, grads = model.loss_and_grads(**batch(), labels=np.array([0, 1, 2]))
    assert np.isfinite(loss) and grads.keys() == model.params.keys()


def test_minilm_quantized_sentence_embeddings(minilm_dir):
    """Real weights (all-MiniLM-L6-v2) on real sentences: mean-pooled sentence embeddings of the
    quantized model against the float32 model, cosine similarity >= 0.98 for every sentence, and
    per-token relative error (|h_q - h| / |h| over real tokens) mean < 0.2.
    Measured: cosine >= 0.993, per-token error mean 0.11 (MiniLM's hidden states have outlier
    dimensions, up to 13x the row's rms, which coarsen the per-row activation scale; PyTorch's
    dynamic int8, per tensor, measured 0.77 on the same inputs). The bounds leave ~2x room."""
    transformers = pytest.importorskip("transformers")
    tok = transformers.BertTokenizerFast(vocab_file=str(minilm_dir / "vocab.txt"), do_lower_case=True)
    from test_checkpoints import SENTENCES
    enc = tok(SENTENCES, padding=True, return_tensors="np")
    inputs = {k: enc[k].astype(np.int64) for k in ("input_ids", "token_type_ids", "attention_mask")}
    model = bert_np.BertModel.from_pretrained(minilm_dir)
    h = model.forward(**inputs)["last_hidden_state"]
    h_q = bert_np.quantize_dynamic(model).forward(**inputs)["last_hidden_state"]
    mask = inputs["attention_mask"].astype(bool)
    per_token = np.linalg.norm(h_q - h, axis=-1)[mask] / np.linalg.norm(h, axis=-1)[mask]
    m = mask[..., None]
    e, e_q = (h * m).sum(1) / m.sum(1), (h_q * m).sum(1) / m.sum(1)
    cos = (e * e_q).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(e_q, axis=1)
    print(f"MiniLM int8: cosine min {cos.min():.4f}, per-token error mean {per_token.mean():.3f}")
    assert cos.min() >= 0.98 and per_token.mean() < 0.2


# ---- bert-np quantize, and predict / evaluate on its output ---------------------------------

def quantize_cli(model, out, *extra):
    from bert_np import cli
    return cli.main(["quantize", "--model", str(model), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def sst2_tiny(tmp_path_factory, data_dir):
    """A BERT-tiny fine-tuned by `bert-np finetune` on the SST-2 sample shipped with bert_np
    (3,000 sentences, 2 epochs, 32 tokens; 68% dev accuracy: trained, far from perfect, so
    many dev sentences sit near the decision boundary), then quantized by `bert-np quantize`.
    Returns (float directory, int8 directory, the dev JSONL file, the quantize summary)."""
    from importlib import resources
    from bert_np import cli
    root = tmp_path_factory.mktemp("sst2_tiny")
    demo = resources.files("bert_np") / "demo_data" / "sst2"
    assert cli.main(["finetune", "--task", "sst2", "--model", "tiny", "--epochs", "2",
                     "--batch-size", "32", "--max-seq-length", "32", "--lr", "1e-3",
                     "--train-file", str(demo / "train.jsonl"), "--dev-file",
                     str(demo / "dev.jsonl"), "--out", str(root / "run")]) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert quantize_cli(root / "run" / "best", root / "int8") == 0
    return root / "run" / "best", root / "int8", demo / "dev.jsonl", json.loads(printed.getvalue())


def test_quantize_command_writes_an_int8_directory(sst2_tiny, capsys):
    """`bert-np quantize --model best --out int8`: the printed summary names the class and the
    2 x 6 int8 weights of BERT-tiny; the directory holds the quantization marker, int8 tensors
    with their scales, and the tokenizer files of --model; it loads as the quantized class."""
    best, int8_dir, _, summary = sst2_tiny
    assert summary["class"] == "BertForSequenceClassification"
    assert summary["int8_weights"] == 12 and summary["tokenizer"] is True
    assert summary["weights_mb"]["int8"] < summary["weights_mb"]["float"]
    assert json.loads((int8_dir / "config.json").read_text())["quantization"]["method"] == \
        "dynamic_int8"
    assert (int8_dir / "vocab.txt").read_bytes() == (best / "vocab.txt").read_bytes()
    tensors = load_file(str(int8_dir / "model.safetensors"))
    assert sum(v.dtype == np.int8 for v in tensors.values()) == 12
    loaded = bert_np.BertForSequenceClassification.from_pretrained(int8_dir, strict=True)
    assert sum(isinstance(v, Int8Weight) for v in loaded.params.values()) == 12


def test_evaluate_and_predict_take_the_int8_directory(sst2_tiny, capsys):
    """End to end through the command line, the int8 model against the float32 model it came
    from (the reference: same weights unquantized, same inputs).
    evaluate on the 872 SST-2 dev sentences: both print an accuracy; the int8 one is above the
    0.6 (the model is trained: the majority class gets 0.51) and within 1 point of float32 (at
    most 8 of 872 sentences change side; measured: 1, 68.2% float32, 68.3% int8).
    predict on 60 dev sentences: the label agrees on at least 57 (95%; measured all 60), and
    where it agrees the printed probability is within 0.02 (measured max |dp| over the whole
    dev set 0.008: int8 moves these logits by ~1e-2)."""
    best, int8_dir, dev, _ = sst2_tiny
    from bert_np import cli
    accuracy = {}
    for name, model in (("float32", best), ("int8", int8_dir)):
        capsys.readouterr()
        assert cli.main(["evaluate", "--model", str(model), "--task", "sst2", "--file", str(dev),
                         "--max-seq-length", "32"]) == 0
        accuracy[name] = json.loads(capsys.readouterr().out)["accuracy"]
    assert accuracy["int8"] > 0.6 and abs(accuracy["int8"] - accuracy["float32"]) <= 0.01, accuracy
    texts = [json.loads(line)["text_a"] for line in dev.read_text().splitlines()[:60]]
    predicted = {}
    for name, model in (("float32", best), ("int8", int8_dir)):
        capsys.readouterr()
        assert cli.main(["predict", "--model", str(model), "--max-seq-length", "32", *texts]) == 0
        rows = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
        assert [r[2] for r in rows] == texts
        predicted[name] = [(r[0], float(r[1])) for r in rows]
    same = [(f, q) for f, q in zip(predicted["float32"], predicted["int8"]) if f[0] == q[0]]
    assert len(same) >= 57
    assert all(abs(f[1] - q[1]) <= 0.02 for f, q in same)


def test_quantize_command_refuses_with_one_line_naming_the_argument(tmp_path, capsys):
    """Exit status 2 and one line on stderr naming the argument: a missing --model, a directory
    without config.json, an already quantized --model, --out equal to --model, a non-empty --out
    without --overwrite (with it, the directory is replaced), an architecture bert_np lacks, a
    config.json that is not JSON."""
    make_model(bert_np.BertForMaskedLM).save_pretrained(tmp_path / "float")
    cases = [((tmp_path / "missing", tmp_path / "o1"), "--model", "no such model directory"),
             ((tmp_path, tmp_path / "o2"), "--model", "holds no config.json"),
             ((tmp_path / "float", tmp_path / "float"), "--out", "is --model")]
    for (model, out), argument, words in cases:
        assert quantize_cli(model, out) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"bert-np quantize: error: {argument} ") and words in err, err
        assert "\n" not in err
    assert quantize_cli(tmp_path / "float", tmp_path / "int8") == 0
    assert json.loads(capsys.readouterr().out)["class"] == "BertForMaskedLM"
    assert quantize_cli(tmp_path / "int8", tmp_path / "again") == 2
    err = capsys.readouterr().err
    assert "--model " in err and "already quantized" in err
    assert quantize_cli(tmp_path / "float", tmp_path / "int8") == 2
    err = capsys.readouterr().err
    assert "--out " in err and "is not empty" in err and "--overwrite" in err
    assert quantize_cli(tmp_path / "float", tmp_path / "int8", "--overwrite") == 0
    config = json.loads((tmp_path / "float" / "config.json").read_text())
    config["architectures"] = ["BertLMHeadModel"]
    (tmp_path / "float" / "config.json").write_text(json.dumps(config))
    assert quantize_cli(tmp_path / "float", tmp_path / "o3") == 2
    err = capsys.readouterr().err
    assert "--model " in err and "'BertLMHeadModel'" in err and "not a bert_np class" in err
    (tmp_path / "float" / "config.json").write_text("{")
    assert quantize_cli(tmp_path / "float", tmp_path / "o4") == 2
    err = capsys.readouterr().err
    assert "--model " in err and "config.json is not valid JSON" in err and "\n" not in err.strip()
