"""Inverted dropout with an explicit random generator.

forward:   m ~ Bernoulli(1 - p) element-wise,   y = x * m / (1 - p)
backward:  dx = dy * m / (1 - p)
With p == 0 or no generator (evaluation) the layer is the identity and its cache is None.

The uniform numbers: each call takes one 64-bit key from `rng` and computes element i's uniform
number from (key, i) alone, with SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
number generators", OOPSLA 2014): the state after i + 1 steps is key + (i + 1) * gamma, and its
finalising mix turns that into 64 well-mixed bits, of which the top 24 give u on the grid
k / 2^24, k = 0 .. 2^24 - 1 (exact in float32 and float64); m = (u >= p) with p rounded to the
dtype of x. A counter-based generator has no sequential state, so the Numba kernel
(kernels/dropout.py) computes the same u in parallel and vectorised, bit for bit; drawing with
`rng.random` instead took ~2.7 ns per element on one core, longer than all of the rest of dropout.
The key comes from `rng`, so saving and restoring rng's state reproduces the masks.
"""
import numpy as np

from ..kernels import accelerated

GAMMA = np.uint64(0x9E3779B97F4A7C15)     # SplitMix64's increment (2^64 / golden ratio, odd)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)     # the multipliers of its finalising mix
MIX_2 = np.uint64(0x94D049BB133111EB)
SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))
UNIFORM_BITS = 24


def counter_uniform(key, n, dtype):
    """u (n,) in [0, 1): u[i] = (splitmix64(key + (i + 1) * GAMMA) >> 40) / 2^24, in `dtype`."""
    z = np.arange(1, n + 1, dtype=np.uint64) * GAMMA + np.uint64(key)   # wraps mod 2^64
    z = (z ^ (z >> SHIFTS[0])) * MIX_1
    z = (z ^ (z >> SHIFTS[1])) * MIX_2
    z ^= z >> SHIFTS[2]
    top_bits = z >> np.uint64(64 - UNIFORM_BITS)
    return top_bits.astype(dtype) * np.dtype(dtype).type(2.0 ** -UNIFORM_BITS)


def draw_key(rng):
    """The 64-bit key of one dropout call, drawn from the model's Generator."""
    return rng.integers(0, 2 ** 64, dtype=np.uint64)


@accelerated("dropout_forward")
def dropout_forward(x, p, rng):
    """Returns (y, cache) with cache = m / (1 - p), or (x, None) when dropout is off."""
    if p == 0.0 or rng is None:
        return x, None
    u = counter_uniform(draw_key(rng), x.size, x.dtype).reshape(x.shape)
    keep_scaled = (u >= x.dtype.type(p)).astype(x.dtype)     # m
    keep_scaled *= 1.0 / (1.0 - p)                            # m / (1 - p)
    return x * keep_scaled, keep_scaled


def dropout_backward(dy, cache):
    return dy if cache is None else dy * cache
