"""Every Numba kernel in bert_np/kernels against the NumPy reference it replaces.

Compared: every value each kernel returns (outputs, caches, gradients) with the same call to the
reference (`op.reference`), on awkward shapes: 1x1, prime sizes, T=1, leading dimensions, inputs
that are not C-contiguous (a strided slice, a transposed view, a gathered array), sizes larger than
the GEMM's cache blocks, and attention rows whose keys are all padding.

Error measure (reference.rel_error): max |kernel - reference| / max |reference|.
Tolerances, and why:
  float32 <= 1e-5   kernel and reference sum in different orders (blocked dot products, per-row
                    reductions) and the kernel uses its own vectorised exp; each costs a few float32
                    ulps (~1e-7) relative to the tensor's scale, far below 1e-5.
  float64 <= 1e-12  the same argument with double precision (~1e-16 per operation).
A wrong index, a missing term or a stale block gives errors of order 1, so neither hides a bug.
"""
import numba
import numpy as np
import pytest

from bert_np import kernels
from bert_np.kernels import gelu, gemm, layernorm, softmax
from bert_np.layers import activations, attention
from bert_np.layers import layernorm as layernorm_ref
from bert_np.layers import linear as linear_ref
from reference import rel_error

TOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def assert_close(kernel_values, reference_values, dtype, what):
    """Every array of the kernel equals the reference's in dtype, shape and value (within TOL)."""
    for i, (k, r) in enumerate(zip(kernel_values, reference_values, strict=True)):
        k, r = np.asarray(k), np.asarray(r)
        assert k.dtype == r.dtype and k.shape == r.shape, f"{what}[{i}]: {k.dtype}{k.shape} vs {r.dtype}{r.shape}"
        err = rel_error(k, r)
        assert err <= TOL[dtype], f"{what}[{i}]: relative error {err:.2e} > {TOL[dtype]}"


def under_numba(op):
    """op (an accelerated function of bert_np.layers or bert_np.optim) as the "numba" backend runs
    it: its kernel, or its NumPy reference where the kernel declines the call (NotImplemented)."""
    def run(*args, **kwargs):
        with kernels.using_backend("numba"):
            return op(*args, **kwargs)
    return run


def non_contiguous(x, rng):
    """The values of x (rows, columns) in other memory layouts: three views that are not
    C-contiguous, and a gathered copy as fancy indexing makes (the MLM head's h[masked])."""
    return {"strided": np.repeat(x, 2, axis=-1)[..., ::2],   # every other column of a wider array
            "transposed": np.asfortranarray(x),               # columns contiguous
            "reversed": x[::-1].copy()[::-1],                 # negative row stride
            "gathered": x[rng.permutation(len(x))]}


# ---------------------------------------------------------------- GEMM (Linear forward/backward)
LINEAR_SHAPES = [
    ((1, 1), 1),            # 1x1
    ((7, 13), 5),           # primes, smaller than one 8 x 16 register tile
    ((2, 3, 17), 11),       # leading dimensions folded into rows
    ((197, 401), 1031),     # more than one MC row block, KC k-block and NC column block
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, d_out", LINEAR_SHAPES)
def test_linear_matches_reference(x_shape, d_out, dtype, rng):
    """y, cache, dx, dW, db of the kernels equal the reference's; the caches are interchangeable."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((d_out, x_shape[-1])).astype(dtype)
    b = rng.standard_normal(d_out).astype(dtype)
    dy = rng.standard_normal(x_shape[:-1] + (d_out,)).astype(dtype)
    y, cache = gemm.linear_forward(x, w, b)
    y_ref, cache_ref = linear_ref.linear_forward.reference(x, w, b)
    assert cache[0] is x and cache[1] is w                    # same cache layout as the reference
    assert_close([y], [y_ref], dtype, "linear_forward")
    grads_ref = linear_ref.linear_backward.reference(dy, cache_ref)
    assert_close(gemm.linear_backward(dy, cache), grads_ref, dtype, "linear_backward")
    assert_close(gemm.linear_backward(dy, cache_ref), grads_ref, dtype, "linear_backward(ref cache)")
    assert_close([gemm.linear_forward(x, w, None)[0]], [linear_ref.linear_forward.reference(x, w, None)[0]],
                 dtype, "linear_forward without bias")


@pytest.mark.parametrize("layout", ["strided", "transposed", "reversed", "gathered", "pooler h[:, 0]"])
def test_linear_non_contiguous_inputs(layout, rng):
    """x that is not C-contiguous (the pooler's h[:, 0], strided and transposed views) gives the
    reference's y and gradients: the GEMM reads any strides through its packing step."""
    h = rng.standard_normal((5, 4, 23))
    x = h[:, 0] if layout == "pooler h[:, 0]" else non_contiguous(h[:, 0], rng)[layout]
    assert not x.flags.c_contiguous or layout == "gathered"
    w, b, dy = rng.standard_normal((19, 23)), rng.standard_normal(19), rng.standard_normal((5, 19))
    y, cache = gemm.linear_forward(x, w, b)
    assert_close([y], [linear_ref.linear_forward.reference(x, w, b)[0]], np.float64, "forward")
    assert_close(gemm.linear_backward(dy, cache), linear_ref.linear_backward.reference(dy, (x, w)),
                 np.float64, "backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (2049, 1031)])
def test_add_bias_matches_reference(shape, dtype, rng):
    """The parallel bias pass after np.matmul adds b to every row exactly as NumPy's y += b does
    (one addition per element, so the results are equal bit for bit), called directly and through
    add_bias (which uses it above 8 MiB, as the last shape is); a strided y, which the kernel does
    not take, goes to the reference and still gets its bias."""
    y, b = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    ours, through_wrapper, ref = y.copy(), y.copy(), y.copy()
    gemm._add_bias_rows(ours, b)
    under_numba(linear_ref.add_bias)(through_wrapper, b)
    linear_ref.add_bias.reference(ref, b)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(through_wrapper, ref)
    wide = np.repeat(y, 2, axis=1)
    strided = wide[:, ::2]
    under_numba(linear_ref.add_bias)(strided, b)
    np.testing.assert_array_equal(wide[:, ::2], ref)


def test_gemm_transposed_operands_are_not_copied(rng):
    """The three products read W, W.T and dY.T as views: the result equals np.matmul for each."""
    a, b = rng.standard_normal((37, 29)), rng.standard_normal((41, 29))
    for left, right in ((a, b.T), (b, a.T), (a.T, a), (b.T, b)):
        assert_close([gemm.matmul(left, right)], [left @ right], np.float64, "matmul")


# ---------------------------------------------------------------- attention softmax
def scores_and_mask(B, A, T, dtype, rng):
    """Random scores and a padding mask: batch 0 is all padding (a fully masked row), batch 1 has
    its second half padded, the rest none. The mask bias holds np.finfo(dtype).min, as the model's."""
    scores = (3 * rng.standard_normal((B, A, T, T))).astype(dtype)
    attend = np.ones((B, T), dtype=np.int64)
    attend[0] = 0
    if B > 1:
        attend[1, (T + 1) // 2:] = 0
    return scores, attention.padding_mask_bias(attend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, A, T", [(1, 1, 1), (2, 1, 1), (2, 3, 7), (3, 2, 13), (2, 4, 64)])
def test_softmax_matches_reference(B, A, T, dtype, rng):
    """probs and dscores equal the reference's, fully masked rows included (T=1 is a single key)."""
    scores, mask = scores_and_mask(B, A, T, dtype, rng)
    scale = 1.0 / np.sqrt(5.0).item()
    probs = softmax.attention_softmax_forward(scores, mask, scale)
    probs_ref = attention.attention_softmax_forward.reference(scores, mask, scale)
    assert_close([probs], [probs_ref], dtype, "softmax_forward")
    dprobs = rng.standard_normal(scores.shape).astype(dtype)
    assert_close([softmax.attention_softmax_backward(dprobs, probs, scale)],
                 [attention.attention_softmax_backward.reference(dprobs, probs_ref, scale)],
                 dtype, "softmax_backward")


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_fully_masked_row_is_uniform(dtype, rng):
    """A row whose keys are all padding gets attention 1/T on every key and no NaN, as the
    reference and transformers give (every masked score equals dtype-min after the mask)."""
    scores, mask = scores_and_mask(2, 3, 11, dtype, rng)
    probs = softmax.attention_softmax_forward(scores, mask, 0.125)
    np.testing.assert_allclose(probs[0], np.full((3, 11, 11), 1 / 11), rtol=TOL[dtype])
    assert np.all(probs[1, ..., 6:] == 0)                      # padded keys of a real row get 0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_scores_give_the_references_nan_row(bad, rng):
    """A NaN or +inf score makes the reference's whole softmax row NaN. The softmax kernel and the
    fused attention core give that NaN row too (not numbers made up by fast-math code, not an
    exception), and every other value as the reference; a diverged model then shows a NaN loss."""
    from bert_np.kernels import attention as fused
    scores, mask = scores_and_mask(2, 3, 9, np.float32, rng)
    scores[1, 2, 4, 5] = bad
    probs = softmax.attention_softmax_forward(scores, mask, 0.3)
    with np.errstate(invalid="ignore"):                       # inf - inf in the reference
        ref = attention.attention_softmax_forward.reference(scores, mask, 0.3)
    assert np.isnan(ref[1, 2, 4]).all() and np.isnan(probs[1, 2, 4]).all()
    others = np.ones(scores.shape[:3], bool)
    others[1, 2, 4] = False
    assert_close([probs[others]], [ref[others]], np.float32, "the other rows")
    q, k, v = (attention.split_heads(rng.standard_normal((2, 9, 12)).astype(np.float32), 3)
               for _ in range(3))
    q[1, 2, 4, 0] = bad                                       # query 4 of head 2 in sequence 1
    out = fused.attention_context_forward(q, k, v, mask, 0.3)
    with np.errstate(invalid="ignore"):
        out_ref = attention.attention_context_forward.reference(q, k, v, mask, 0.3)
    for ours, theirs in zip(out[:3], out_ref[:3]):
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
        assert np.isnan(ours).any()
        assert_close([np.nan_to_num(ours)], [np.nan_to_num(theirs)], np.float32, "finite part")


def test_softmax_non_contiguous_scores(rng):
    """Scores given as a transposed view (as Q K^T can be) equal the reference's result."""
    scores, mask = scores_and_mask(2, 3, 9, np.float64, rng)
    view = np.ascontiguousarray(scores.swapaxes(-1, -2)).swapaxes(-1, -2)
    assert not view.flags.c_contiguous
    assert_close([softmax.attention_softmax_forward(view, mask, 0.3)],
                 [attention.attention_softmax_forward.reference(view, mask, 0.3)], np.float64, "fwd")
    dprobs = rng.standard_normal(scores.shape)[..., ::-1]
    probs = attention.attention_softmax_forward.reference(scores, mask, 0.3)
    assert_close([softmax.attention_softmax_backward(dprobs, probs, 0.3)],
                 [attention.attention_softmax_backward.reference(dprobs, probs, 0.3)], np.float64, "bwd")


# ---------------------------------------------------------------- LayerNorm and GELU
ELEMENTWISE_SHAPES = [(1, 1), (3, 7), (2, 5, 13), (4, 1, 769)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES)
def test_layernorm_matches_reference(shape, dtype, rng):
    """y, the cache (xhat, rstd, w) and dx, dw, db equal the reference's, with a random upstream
    gradient (an all-ones one makes dx exactly zero and proves nothing); caches interchangeable."""
    x = (2 * rng.standard_normal(shape) + 1).astype(dtype)
    w, b = rng.standard_normal(shape[-1]).astype(dtype), rng.standard_normal(shape[-1]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, cache = layernorm.layernorm_forward(x, w, b, 1e-12)
    y_ref, cache_ref = layernorm_ref.layernorm_forward.reference(x, w, b, 1e-12)
    assert_close([y, *cache], [y_ref, *cache_ref], dtype, "layernorm_forward")
    grads_ref = layernorm_ref.layernorm_backward.reference(dy, cache_ref)
    assert_close(layernorm.layernorm_backward(dy, cache), grads_ref, dtype, "layernorm_backward")
    assert_close(layernorm.layernorm_backward(dy, cache_ref), grads_ref, dtype, "backward(ref cache)")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES)
def test_add_layernorm_matches_reference(shape, dtype, rng):
    """Add & Norm: y and the cache of LayerNorm(x + residual) equal the reference's, which adds
    first and then normalises; a residual of another shape goes to the reference (broadcasting)."""
    x, residual = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    w, b = rng.standard_normal(shape[-1]).astype(dtype), rng.standard_normal(shape[-1]).astype(dtype)
    out = layernorm.add_layernorm_forward(x, residual, w, b, 1e-12)
    out_ref = layernorm_ref.add_layernorm_forward.reference(x, residual, w, b, 1e-12)
    assert_close([out[0], *out[1]], [out_ref[0], *out_ref[1]], dtype, "add_layernorm_forward")
    row = residual[..., :1, :]
    out = under_numba(layernorm_ref.add_layernorm_forward)(x, row, w, b, 1e-12)
    assert_close([out[0]], [layernorm_ref.layernorm_forward.reference(x + row, w, b, 1e-12)[0]],
                 dtype, "add_layernorm_forward, broadcast residual")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,)] + ELEMENTWISE_SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_gelu_matches_reference(shape, dtype, with_bias, rng):
    """y, its cache and dz equal the reference's for z from about -12 to 12 (where Phi saturates
    and exp(-z^2/2) underflows). With the bias: linear_act_forward (GELU of x W^T + b, the bias
    added in the GELU's pass) gives the reference composition's y and z; the backward of the
    composition then runs the GELU kernel on that z."""
    x = (4 * rng.standard_normal(shape)).astype(dtype)
    x.flat[0] = -12.0
    dy = rng.standard_normal(shape).astype(dtype)
    if not with_bias:
        y, cache = gelu.gelu_forward(x)
        y_ref, cache_ref = activations.gelu_forward.reference(x)
        assert cache is x                                     # the cache is the input itself
        assert_close([y], [y_ref], dtype, "gelu_forward")
        assert_close([gelu.gelu_backward(dy, cache)],
                     [activations.gelu_backward.reference(dy, cache)], dtype, "gelu_backward")
        return
    h = rng.standard_normal(shape[:-1] + (7,)).astype(dtype)
    w = rng.standard_normal((shape[-1], 7)).astype(dtype)
    b = (4 * rng.standard_normal(shape[-1:])).astype(dtype)
    y, cache = gelu.linear_act_forward(h, w, b, "gelu")
    y_ref, cache_ref = activations.linear_act_forward.reference(h, w, b, "gelu")
    assert cache[0][0] is h and cache[0][1] is w and cache[2] == "gelu"
    assert_close([y, cache[1]], [y_ref, cache_ref[1]], dtype, "linear_act_forward")
    assert_close(list(activations.linear_act_backward(dy, cache)),
                 list(activations.linear_act_backward.reference(dy, cache_ref)), dtype,
                 "linear_act_backward")


@pytest.mark.parametrize("layout", ["strided", "transposed", "reversed", "gathered"])
def test_layernorm_and_gelu_non_contiguous_inputs(layout, rng):
    """Inputs and upstream gradients in other layouts (dy reversed along H) give the reference's
    values: the kernels make a C-contiguous copy only when they are given something else."""
    x = non_contiguous(rng.standard_normal((6, 17)), rng)[layout]
    w, b, dy = rng.standard_normal(17), rng.standard_normal(17), rng.standard_normal((6, 17))
    out, out_ref = layernorm.layernorm_forward(x, w, b, 1e-5), layernorm_ref.layernorm_forward.reference(x, w, b, 1e-5)
    assert_close([out[0]], [out_ref[0]], np.float64, "layernorm_forward")
    assert_close(layernorm.layernorm_backward(dy[:, ::-1], out[1]),
                 layernorm_ref.layernorm_backward.reference(dy[:, ::-1], out_ref[1]), np.float64,
                 "layernorm_backward")
    assert_close([gelu.gelu_forward(x)[0], gelu.gelu_backward(dy[:, ::-1], x)],
                 [activations.gelu_forward.reference(x)[0],
                  activations.gelu_backward.reference(dy[:, ::-1], x)], np.float64, "gelu")
    w, bias = rng.standard_normal((17, 17))[:, ::-1], rng.standard_normal(34)[::2]   # strided
    assert_close([gelu.linear_act_forward(x, w, bias, "gelu")[0]],
                 [activations.linear_act_forward.reference(x, w, bias, "gelu")[0]], np.float64,
                 "linear_act")


def test_other_dtypes_fall_back_to_the_reference(rng):
    """The kernels are compiled for float32 and float64 with matching dtypes; anything else (a
    float16 input, a float64 mask on float32 scores) is passed to the reference, so the result is
    the reference's own, NumPy's promotion included."""
    x16 = rng.standard_normal((3, 5)).astype(np.float16)
    np.testing.assert_array_equal(under_numba(activations.gelu_forward)(x16)[0],
                                  activations.gelu_forward.reference(x16)[0])
    scores, mask = scores_and_mask(2, 1, 3, np.float32, rng)
    probs = under_numba(attention.attention_softmax_forward)(scores, mask.astype(np.float64), 0.5)
    assert probs.dtype == np.float64
    np.testing.assert_array_equal(
        probs, attention.attention_softmax_forward.reference(scores, mask.astype(np.float64), 0.5))


# ---------------------------------------------------------------- attention's batched products
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, A, T, D", [(1, 1, 1, 1), (2, 3, 7, 5), (3, 2, 13, 11), (2, 4, 64, 32)])
def test_batched_matmuls_match_reference(B, A, T, D, dtype, rng):
    """Q K^T, P V and P^T dC on the strided head views split_heads makes (not contiguous)."""
    from bert_np.kernels import batched
    q = attention.split_heads(rng.standard_normal((B, T, A * D)).astype(dtype), A)
    k = attention.split_heads(rng.standard_normal((B, T, A * D)).astype(dtype), A)
    p = rng.random((B, A, T, T)).astype(dtype)
    assert A == 1 or not q.flags.c_contiguous
    assert_close([batched.batched_matmul_nt(q, k)], [attention.batched_matmul_nt.reference(q, k)],
                 dtype, "Q K^T")
    assert_close([batched.batched_matmul(p, k)], [attention.batched_matmul.reference(p, k)],
                 dtype, "P V")
    assert_close([batched.batched_matmul_tn(p, q)], [attention.batched_matmul_tn.reference(p, q)],
                 dtype, "P^T dC")


# ---------------------------------------------------------------- fused attention core
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, A, T, D", [(1, 1, 1, 1), (2, 3, 7, 5), (3, 2, 13, 11), (2, 2, 37, 16),
                                        (2, 4, 64, 32), (2, 1, 20, 40)])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_attention_context_matches_reference(B, A, T, D, dtype, dropout_p, rng):
    """context, P, P' and the dropout mask of the one-head-at-a-time kernel equal the reference's
    four operations, on split_heads views, with fully masked and half-padded rows (the mask of
    scores_and_mask), T and D that are not multiples of the 8 x 16 tile, and D > NR. The dropout
    mask must be equal bit for bit: both draw one key from equal generators and number the
    elements of the (B, A, T, T) stack alike; the generators must end in the same state."""
    from bert_np.kernels import attention as fused
    q, k, v = (attention.split_heads(rng.standard_normal((B, T, A * D)).astype(dtype), A)
               for _ in range(3))
    _, mask = scores_and_mask(B, A, T, dtype, rng)
    gen, gen_ref = np.random.default_rng(7), np.random.default_rng(7)
    out = fused.attention_context_forward(q, k, v, mask, 0.3, dropout_p, gen)
    out_ref = attention.attention_context_forward.reference(q, k, v, mask, 0.3, dropout_p, gen_ref)
    assert gen.bit_generator.state == gen_ref.bit_generator.state
    if dropout_p:
        np.testing.assert_array_equal(out[3], out_ref[3])
        assert_close(out[:3], out_ref[:3], dtype, "attention core")
    else:
        assert out[3] is None and out_ref[3] is None
        assert_close(out[:3], out_ref[:3], dtype, "attention core")
    inference = fused.attention_context_forward(q, k, v, mask, 0.3, 0.0, None, keep_probs=False)
    assert inference[1:] == (None, None, None)
    assert_close([inference[0]], [attention.attention_context_forward.reference(
        q, k, v, mask, 0.3)[0]], dtype, "attention context, inference")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T, H, A", [(1, 1, 4, 1), (2, 7, 15, 3), (3, 13, 22, 2), (2, 37, 64, 2),
                                        (2, 20, 80, 2)])
def test_attention_sublayer_in_inference_matches_reference(B, T, H, A, dtype, rng):
    """The inference kernel of attention_forward (Q, K, V as one product into a (B, T, 3H) array
    read at column offsets, the biases added by each head's task to its own columns) against the
    reference's three Linear layers, split_heads and attention core, with random biases, with fully masked and half-padded rows; D = H / A odd, below and above the 16-column
    tile. Training calls (a cache, or dropout) are declined."""
    from bert_np.kernels import attention as fused
    x = rng.standard_normal((B, T, H)).astype(dtype)
    params = [p.astype(dtype) for _ in range(3) for p in
              (0.3 * rng.standard_normal((H, H)), rng.standard_normal(H))]
    _, mask = scores_and_mask(B, A, T, dtype, rng)
    out = fused.attention_forward(x, *params, mask, A, keep_cache=False)
    out_ref = attention.attention_forward.reference(x, *params, mask, A, keep_cache=False)
    assert out[1] is None and out_ref[1] is None
    assert_close([out[0]], [out_ref[0]], dtype, "attention sublayer, inference")
    assert fused.attention_forward(x, *params, mask, A) is NotImplemented
    assert fused.attention_forward(x, *params, mask, A, 0.1, np.random.default_rng(0),
                                   keep_cache=False) is NotImplemented


INT8_PATHS = __import__("bert_np.kernels.int8", fromlist=["x"]).available_paths()


@pytest.mark.parametrize("path", INT8_PATHS)
@pytest.mark.parametrize("B, T, H, A", [(2, 7, 15, 3), (2, 37, 64, 2), (3, 32, 20, 4),
                                        (2, 100, 66, 3), (1, 1, 8, 2), (3, 65, 12, 2)])
def test_attention_sublayer_int8_equals_three_int8_projections(path, B, T, H, A, rng,
                                                               monkeypatch):
    """With int8 weights the kernel quantizes x once for the stacked [Wq; Wk; Wv]: each output
    channel is the same integer sum and the same epilogue as in its own projection, so the
    context equals the reference composition's (three int8 Linear layers, then the attention
    core) bit for bit, on every product path; and so does the job per sequence that runs the
    projection and the heads together (`_attention_int8`, on the AMX and VNNI paths where the
    padding of T to 32 rows wastes at most a quarter: T = 32, 100 here), which must equal the
    two-pass kernel it replaces."""
    from bert_np.kernels import attention as fused
    from bert_np.kernels import int8 as k8
    from bert_np.layers.quantized_linear import quantize_weight
    x = rng.standard_normal((B, T, H)).astype(np.float32)
    params = [p for _ in range(3) for p in (quantize_weight(rng.standard_normal((H, H)).astype(
        np.float32)), rng.standard_normal(H).astype(np.float32))]
    _, mask = scores_and_mask(B, A, T, np.float32, rng)
    assert fused._fuses_int8_projection(B, T) == (T in (32, 100)) or numba.get_num_threads() > 1
    with k8.using_path(path):
        out = fused.attention_forward(x, *params, mask, A, keep_cache=False)[0]
        np.testing.assert_array_equal(out, attention.attention_forward.reference(
            x, *params, mask, A, keep_cache=False)[0])
        monkeypatch.setattr(fused, "_fuses_int8_projection", lambda B, T: False)
        np.testing.assert_array_equal(
            out, fused.attention_forward(x, *params, mask, A, keep_cache=False)[0])
    assert k8.stacked_weight(params[0::2]) is k8.stacked_weight(params[0::2])   # built once
    with k8.using_path(path):                  # one copy of the stack: panels or W_q, not both
        stacked = k8.stacked_weight(params[0::2])
        assert (stacked.q is None) == (path != "portable") == (stacked.packed is not None)


# ---------------------------------------------------------------- AdamW update
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7, 13), (3000, 17)])
@pytest.mark.parametrize("decay", [0.0, 1e-5])
def test_adamw_update_matches_reference(shape, dtype, decay, rng):
    """The one-pass update changes p, m and v in place exactly as the ten NumPy ufuncs do."""
    from bert_np import optim
    p, g, m = (rng.normal(size=shape).astype(dtype) for _ in range(3))
    v = np.abs(rng.normal(size=shape)).astype(dtype)
    args = (1e-3, 0.9, 0.999, 1e-6, decay, 1e-3 / (1 - 0.9 ** 3), 1 / np.sqrt(1 - 0.999 ** 3))
    ours, ref = [x.copy() for x in (p, g, m, v)], [x.copy() for x in (p, g, m, v)]
    kernels._load_kernels()
    kernels._kernels["adamw_update"](*ours, *args)
    optim.adamw_update.reference(*ref, *args)
    assert_close(ours, ref, dtype, "adamw p, g, m, v")


def test_adamw_update_non_contiguous_takes_the_reference(rng):
    from bert_np import optim
    p = rng.normal(size=(6, 8))[:, ::2]
    g, m, v = rng.normal(size=p.shape), np.zeros(p.shape), np.zeros(p.shape)
    expected = p.copy()
    optim.adamw_update.reference(expected, g, m.copy(), v.copy(), 0.1, 0.9, 0.999, 1e-6, 0.0, 1.0, 1.0)
    under_numba(optim.adamw_update)(p, g, m, v, 0.1, 0.9, 0.999, 1e-6, 0.0, 1.0, 1.0)
    np.testing.assert_array_equal(p, expected)


# ---------------------------------------------------------------- dropout, embedding backward
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7, 13), (2, 3, 5, 11), (40000,)])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.999])
def test_dropout_forward_equals_reference_bit_for_bit(shape, dtype, p):
    """Same seed, same draw: the one-pass kernel's output and scaled mask equal the reference's
    exactly (the mask is a comparison and the scale one rounding, so nothing is left to tolerate)."""
    from bert_np.kernels import dropout
    from bert_np.layers import dropout as dropout_ref
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    y, mask = dropout.dropout_forward(x, p, np.random.default_rng(7))
    y_ref, mask_ref = dropout_ref.dropout_forward.reference(x, p, np.random.default_rng(7))
    assert y.dtype == y_ref.dtype and mask.dtype == mask_ref.dtype
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(mask, mask_ref)


def test_dropout_forward_on_a_view_and_when_off(rng):
    from bert_np.layers import dropout as dropout_ref
    x = rng.standard_normal((9, 14)).astype(np.float32)[:, ::2]          # not contiguous
    for p, gen in [(0.3, 5), (0.0, 5), (0.3, None)]:
        ours = under_numba(dropout_ref.dropout_forward)(
            x, p, None if gen is None else np.random.default_rng(gen))
        ref = dropout_ref.dropout_forward.reference(x, p, None if gen is None else np.random.default_rng(gen))
        np.testing.assert_array_equal(ours[0], ref[0])
        assert (ours[1] is None) == (ref[1] is None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_id", [None, 0, 3])
def test_embedding_backward_equals_np_add_at(dtype, padding_id, rng):
    """Repeated ids add up in token order, as np.add.at does: equal bit for bit, padding row kept."""
    from bert_np.kernels import embeddings
    from bert_np.layers import embeddings as embeddings_ref
    ids = rng.integers(0, 6, (4, 9))                          # few ids: many repeats
    ids[0, :3] = 3
    dy = rng.standard_normal((4, 9, 5)).astype(dtype)
    start = rng.standard_normal((6, 5)).astype(dtype)
    ours, ref = start.copy(), start.copy()
    embeddings.embedding_backward(dy, ids, ours, padding_id)
    embeddings_ref.embedding_backward.reference(dy, ids, ref, padding_id)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T, H, V", [(1, 1, 1, 1), (2, 7, 13, 11), (3, 37, 769, 50),
                                        (4, 128, 128, 300)])
def test_embeddings_layernorm_equals_reference_bit_for_bit(B, T, H, V, dtype, rng):
    """LayerNorm(E_word[ids] + E_pos[t] + E_type[types]) in one pass per token: y and the cache
    (xhat, rstd, w) equal the reference's (three lookups, then the LayerNorm kernel) bit for bit,
    since the sum is formed in the reference's order without fast math and the row is normalised
    by the LayerNorm kernel's own code; T below the position table's length, repeated ids, ids
    given as int32. Ids outside a table, a negative id, or T past the position table are
    declined, and the reference then raises or counts from the end as NumPy does."""
    from bert_np.kernels import embeddings
    from bert_np.layers import embeddings as embeddings_ref
    word, position, token_type = (rng.standard_normal((n, H)).astype(dtype) for n in (V, T + 3, 2))
    w, b = rng.standard_normal(H).astype(dtype), rng.standard_normal(H).astype(dtype)
    ids, types = rng.integers(0, V, (B, T)).astype(np.int32), rng.integers(0, 2, (B, T))
    tables = (word, position, token_type, w, b, 1e-12)
    y, cache = embeddings.embeddings_layernorm_forward(ids, types, *tables)
    with kernels.using_backend("numba"):
        y_ref, cache_ref = embeddings_ref.embeddings_layernorm_forward.reference(ids, types, *tables)
    for ours, ref in zip([y, *cache], [y_ref, *cache_ref], strict=True):
        assert ours.dtype == ref.dtype and ours.shape == ref.shape
        np.testing.assert_array_equal(ours, ref)
    assert cache[2] is w
    bad_ids, bad_types = ids.copy(), types.copy()
    bad_ids[-1, -1], bad_types[0, 0] = V, -1
    for args in [(bad_ids, types), (ids, bad_types)]:
        assert embeddings.embeddings_layernorm_forward(*args, *tables) is NotImplemented
    assert embeddings.embeddings_layernorm_forward(ids, types, word, position[:T - 1],
                                                   *tables[2:]) is NotImplemented
    with pytest.raises(IndexError):
        under_numba(embeddings_ref.embeddings_layernorm_forward)(bad_ids, types, *tables)


def test_embedding_backward_rejects_ids_outside_the_table(rng):
    from bert_np.layers import embeddings as embeddings_ref
    table = np.zeros((6, 5), np.float32)
    with pytest.raises(IndexError):
        under_numba(embeddings_ref.embedding_backward)(np.ones((1, 2, 5), np.float32),
                                                       np.array([[1, 6]]), table)


# ---------------------------------------------------------------- the backend switch
OPS = ["linear_forward", "linear_backward", "attention_softmax_forward",
       "attention_softmax_backward", "layernorm_forward", "layernorm_backward", "gelu_forward",
       "gelu_backward", "adamw_update", "batched_matmul", "batched_matmul_nt", "batched_matmul_tn",
       "dropout_forward", "embedding_backward", "attention_context_forward",
       "add_layernorm_forward", "add_bias", "linear_act_forward", "attention_forward",
       "feed_forward", "embeddings_layernorm_forward"]


@pytest.fixture
def restore_backend():
    before = kernels.get_backend()
    yield
    kernels.set_backend(before)


@pytest.mark.parametrize("op", OPS)
def test_backend_switch_selects_kernel_or_reference(op, restore_backend):
    """"numba" runs every registered kernel, "numpy" none, "auto" those in AUTO_NUMBA only."""
    kernels.set_backend("numba")
    assert kernels.kernel_for(op) is kernels._kernels[op]
    kernels.set_backend("numpy")
    assert kernels.kernel_for(op) is None
    kernels.set_backend("auto")
    assert (kernels.kernel_for(op) is not None) == (op in kernels.AUTO_NUMBA)


def test_auto_names_only_registered_kernels():
    kernels._load_kernels()
    assert kernels.AUTO_NUMBA <= set(kernels._kernels)


def test_kernels_are_leaves():
    """No module of bert_np/kernels imports bert_np.layers or bert_np.optim (read from the source:
    absolute or relative imports); the dispatcher owns the fall-back to the reference."""
    import ast
    import pathlib
    folder = pathlib.Path(kernels.__file__).parent
    offending = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith(("..layers", "..optim", "bert_np.layers", "bert_np.optim")):
                    offending.append(f"{path.name}: {name}")
    assert not offending, offending


def test_a_declined_call_runs_the_reference(restore_backend):
    """A kernel that returns NotImplemented (here: float16, which no kernel is compiled for) makes
    the dispatcher run the NumPy reference, under every backend."""
    x = np.linspace(-3, 3, 12, dtype=np.float16).reshape(3, 4)
    expected = activations.gelu_forward.reference(x)[0]
    for backend in ("numba", "auto", "numpy"):
        kernels.set_backend(backend)
        np.testing.assert_array_equal(activations.gelu_forward(x)[0], expected)


def test_each_operation_is_registered_by_the_module_named_for_it():
    """kernel_for imports only the module KERNEL_MODULE names for an operation, so that module must
    be the one that registers it, and every registered kernel must be listed."""
    kernels._load_kernels()
    assert set(kernels._kernels) == set(kernels.KERNEL_MODULE)
    for op, module in kernels.KERNEL_MODULE.items():
        assert kernels._kernels[op].__module__ == f"bert_np.kernels.{module}", op
