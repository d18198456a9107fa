"""Every layer's hand-written backward against float64 central finite differences.

For a layer y = f(inputs), the scalar L = sum(y * G) with a fixed random upstream gradient G has
dL/dinput = backward(G). Each input and each parameter is perturbed entry by entry by +-1e-6.
Tolerance: relative error (max |analytic - numeric| / max |numeric|) <= 1e-7. Central differences
in float64 have truncation error ~eps^2 = 1e-12 and rounding error ~1e-16 / eps = 1e-10 relative,
so 1e-7 leaves room for neither a missing term nor a wrong sign (those give errors of order 1).
A random G matters: with G all ones, LayerNorm's input gradient is exactly zero and proves nothing.
"""
import numpy as np
import pytest

from bert_np.layers import (activations, attention, cross_entropy_backward, cross_entropy_forward,
                            dropout_backward, dropout_forward, embedding_backward,
                            embedding_forward, layernorm_backward, layernorm_forward,
                            linear_backward, linear_forward, mse_backward, mse_forward)
from bert_np.layers.attention import attention_softmax_backward, attention_softmax_forward
from conftest import _PARITY_ROWS
from reference import numerical_gradient, rel_error

TOL = 1e-7


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def check(name, analytic, loss_fn, wrt):
    numeric = numerical_gradient(loss_fn, wrt)
    err = rel_error(analytic, numeric)
    _PARITY_ROWS.append(("layer backward vs finite diff. (rel)", name, err))
    assert err <= TOL, f"{name}: relative error {err:.2e} > {TOL}"


def test_linear(rng):
    x, w, b = rng.normal(size=(2, 3, 5)), rng.normal(size=(4, 5)), rng.normal(size=4)
    G = rng.normal(size=(2, 3, 4))
    dx, dw, db = linear_backward(G, linear_forward(x, w, b)[1])
    loss = lambda: float((linear_forward(x, w, b)[0] * G).sum())
    for name, analytic, wrt in (("x", dx, x), ("w", dw, w), ("b", db, b)):
        check(f"linear d{name}", analytic, loss, wrt)
    # without a bias: y = x W^T
    np.testing.assert_allclose(linear_forward(x, w, None)[0], np.einsum("btk,ok->bto", x, w),
                               rtol=1e-12)


def test_layernorm(rng):
    x, w, b = rng.normal(size=(3, 4, 7)) * 2 + 1, rng.normal(size=7), rng.normal(size=7)
    G = rng.normal(size=(3, 4, 7))
    dx, dw, db = layernorm_backward(G, layernorm_forward(x, w, b, 1e-12)[1])
    loss = lambda: float((layernorm_forward(x, w, b, 1e-12)[0] * G).sum())
    for name, analytic, wrt in (("x", dx, x), ("w", dw, w), ("b", db, b)):
        check(f"layernorm d{name}", analytic, loss, wrt)


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_hidden_activations(rng, act):
    """dL/dx of act(x), and dL/dx, dL/dW, dL/db of linear_act = act(x W^T + b) (the feed-forward's
    intermediate layer), against central differences."""
    forward, backward = activations.ACTIVATIONS[act]
    x = rng.normal(size=(4, 9)) * 2
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU's kink away from the finite-difference step
    G = rng.normal(size=x.shape)
    check(act, backward(G, forward(x)[1]), lambda: float((forward(x)[0] * G).sum()), x)
    h, w, b = rng.normal(size=(4, 5)), rng.normal(size=(9, 5)), rng.normal(size=9)
    z = h @ w.T + b
    b[np.abs(z).min(axis=0) < 1e-3] += 0.5                     # ReLU's kink again
    dh, dw, db = activations.linear_act_backward(G, activations.linear_act_forward(h, w, b, act)[1])
    loss = lambda: float((activations.linear_act_forward(h, w, b, act)[0] * G).sum())
    for name, analytic, wrt in (("x", dh, h), ("w", dw, w), ("b", db, b)):
        check(f"linear_act {act} d{name}", analytic, loss, wrt)


def test_tanh(rng):
    x, G = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    dx = activations.tanh_backward(G, activations.tanh_forward(x)[1])
    check("tanh", dx, lambda: float((activations.tanh_forward(x)[0] * G).sum()), x)


def test_gelu_is_the_exact_erf_form():
    # GELU(1) = 1 * Phi(1) = 0.8413447460685429 (standard normal CDF at 1, from tables)
    y, _ = activations.gelu_forward(np.array([1.0, 0.0, -1.0]))
    np.testing.assert_allclose(y, [0.8413447460685429, 0.0, -1 + 0.8413447460685429], rtol=1e-15)


def test_embedding(rng):
    table, ids = rng.normal(size=(6, 4)), np.array([[1, 3, 1], [0, 5, 1]])  # id 1 repeats
    G = rng.normal(size=(2, 3, 4))
    dtable = np.zeros_like(table)
    embedding_backward(G, ids, dtable)
    check("embedding dtable", dtable, lambda: float((embedding_forward(ids, table) * G).sum()), table)
    # with a padding id, that id's lookups add no gradient (PyTorch's padding_idx)
    dtable_pad = np.zeros_like(table)
    embedding_backward(G, ids, dtable_pad, padding_id=1)
    assert np.all(dtable_pad[1] == 0) and np.allclose(dtable_pad[[0, 3, 5]], dtable[[0, 3, 5]])


def test_dropout(rng):
    x, G = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    run = lambda: dropout_forward(x, 0.3, np.random.default_rng(7))  # same mask every call
    y, cache = run()
    assert 0 < (y == 0).mean() < 1
    check("dropout", dropout_backward(G, cache), lambda: float((run()[0] * G).sum()), x)
    assert dropout_forward(x, 0.3, None)[0] is x  # evaluation: identity


def test_attention_softmax(rng):
    scores, G = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    mask = np.ones((2, 4)); mask[1, 2:] = 0
    bias = attention.padding_mask_bias(mask, np.float64)
    probs = attention_softmax_forward(scores, bias, 0.5)
    dscores = attention_softmax_backward(G, probs, 0.5)
    loss = lambda: float((attention_softmax_forward(scores, bias, 0.5) * G).sum())
    check("softmax dscores", dscores, loss, scores)


@pytest.mark.parametrize("dropout_p", [0.0, 0.2])
def test_self_attention(rng, dropout_p):
    B, T, H, A = 2, 5, 6, 3
    x = rng.normal(size=(B, T, H))
    weights = [rng.normal(size=s) * 0.5 for s in [(H, H), (H,)] * 3]  # wq bq wk bk wv bv
    mask = np.ones((B, T)); mask[1, 3:] = 0
    bias = attention.padding_mask_bias(mask, np.float64)
    G = rng.normal(size=(B, T, H))
    run = lambda: attention.attention_forward(x, *weights, bias, A, dropout_p,
                                              np.random.default_rng(3) if dropout_p else None)
    dx, dweights = attention.attention_backward(G, run()[1])
    loss = lambda: float((run()[0] * G).sum())
    check("attention dx", dx, loss, x)
    for name, analytic, wrt in zip(("wq", "bq", "wk", "bk", "wv", "bv"), dweights, weights):
        if name == "bk":  # softmax ignores a shift: the true gradient is 0, compare absolutely
            assert np.abs(analytic).max() < 1e-12 and np.abs(numerical_gradient(loss, wrt)).max() < 1e-8
        else:
            check(f"attention d{name}", analytic, loss, wrt)


def test_cross_entropy_with_ignore_index(rng):
    logits, labels = rng.normal(size=(5, 4)), np.array([2, -100, 0, 3, -100])
    dlogits = cross_entropy_backward(1.0, cross_entropy_forward(logits, labels)[1])
    check("cross-entropy", dlogits, lambda: cross_entropy_forward(logits, labels)[0], logits)
    assert np.all(dlogits[[1, 4]] == 0)
    # by hand: mean over the 3 kept rows of -log softmax at the label
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    by_hand = -(log_softmax[0, 2] + log_softmax[2, 0] + log_softmax[3, 3]) / 3
    assert abs(cross_entropy_forward(logits, labels)[0] - by_hand) < 1e-14


def test_mse(rng):
    pred, target = rng.normal(size=6), rng.normal(size=6)
    dpred = mse_backward(1.0, mse_forward(pred, target)[1])
    check("mse", dpred, lambda: mse_forward(pred, target)[0], pred)
