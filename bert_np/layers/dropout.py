"""Inverted dropout with an explicit random generator.

forward:   m ~ Bernoulli(1 - p) element-wise,   y = x * m / (1 - p)
backward:  dx = dy * m / (1 - p)
With p == 0 or no generator (evaluation) the layer is the identity and its cache is None.
The uniform numbers u come from `rng.random(x.shape, dtype=x.dtype)` and m = (u >= p), in the
dtype of x; the Numba kernel (kernels/dropout.py) draws the same u and so gives the same y and m.
"""
from ..kernels import accelerated


@accelerated("dropout_forward")
def dropout_forward(x, p, rng):
    """Returns (y, cache) with cache = m / (1 - p), or (x, None) when dropout is off."""
    if p == 0.0 or rng is None:
        return x, None
    keep_scaled = (rng.random(x.shape, dtype=x.dtype) >= p).astype(x.dtype)  # m
    keep_scaled *= 1.0 / (1.0 - p)                            # m / (1 - p)
    return x * keep_scaled, keep_scaled


def dropout_backward(dy, cache):
    return dy if cache is None else dy * cache
