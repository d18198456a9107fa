"""Inverted dropout with an explicit random generator.

forward:   m ~ Bernoulli(1 - p) element-wise,   y = x * m / (1 - p)
backward:  dx = dy * m / (1 - p)
With p == 0 or no generator (evaluation) the layer is the identity and its cache is None.

m = (u >= p) with u uniform in [0, 1) and p rounded to the dtype of x. The uniform numbers come
from `bert_np.rng.counter_uniform`, one key per call drawn from `rng`: the Numba kernel computes
the very same numbers, so both backends drop the same elements. `rng` is a Generator, or in
training a `DropoutKeys`, whose element numbering starts at its first example's (rng.py), so a
slice of a batch gets the masks of those rows of the whole batch.
"""
from ..kernels import accelerated
from ..rng import counter_uniform, draw_key, first_element


@accelerated("dropout_forward")
def dropout_forward(x, p, rng):
    """Returns (y, cache) with cache = m / (1 - p), or (x, None) when dropout is off."""
    if p == 0.0 or rng is None:
        return x, None
    key, first = draw_key(rng), first_element(rng, x.shape)   # first: element 0's global index
    u = counter_uniform(key, x.size, x.dtype, first).reshape(x.shape)     # uniform in [0, 1)
    keep_scaled = (u >= x.dtype.type(p)).astype(x.dtype)     # m
    keep_scaled *= 1.0 / (1.0 - p)                            # m / (1 - p)
    return x * keep_scaled, keep_scaled


def dropout_backward(dy, cache):
    """dx = dy * m / (1 - p), or dy when dropout was off."""
    return dy if cache is None else dy * cache
