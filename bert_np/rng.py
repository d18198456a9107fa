"""Counter-based uniform numbers, shared by dropout's NumPy reference and its Numba kernels.

Each dropout call takes one 64-bit key from the model's `np.random.Generator` and computes element
i's uniform number from (key, i) alone, with SplitMix64 (Steele, Lea and Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014):

    z_i = key + (i + 1) * GAMMA                          (mod 2^64)
    z_i = (z_i ^ (z_i >> 30)) * MIX_1
    z_i = (z_i ^ (z_i >> 27)) * MIX_2
    z_i =  z_i ^ (z_i >> 31)
    u_i = (z_i >> 40) / 2^24                             on the grid k / 2^24, exact in float32

No element depends on another, so a kernel computes the same u in parallel, bit for bit, and
saving and restoring the Generator's state reproduces every mask. This module is a leaf: the
layers and the kernels both import it, it imports neither.
"""
import numpy as np

GAMMA = np.uint64(0x9E3779B97F4A7C15)     # SplitMix64's increment (2^64 / golden ratio, odd)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)     # the multipliers of its finalising mix
MIX_2 = np.uint64(0x94D049BB133111EB)
SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))
UNIFORM_BITS = 24                         # u keeps the top 24 bits of z


def draw_key(rng: np.random.Generator) -> np.uint64:
    """The 64-bit key of one dropout call, drawn from the model's Generator."""
    return rng.integers(0, 2 ** 64, dtype=np.uint64)


def counter_uniform(key, n: int, dtype) -> np.ndarray:
    """u (n,) in [0, 1) as the module docstring defines it, in `dtype`."""
    z = np.arange(1, n + 1, dtype=np.uint64) * GAMMA + np.uint64(key)   # wraps mod 2^64
    z = (z ^ (z >> SHIFTS[0])) * MIX_1
    z = (z ^ (z >> SHIFTS[1])) * MIX_2
    z ^= z >> SHIFTS[2]
    top_bits = z >> np.uint64(64 - UNIFORM_BITS)
    return top_bits.astype(dtype) * np.dtype(dtype).type(2.0 ** -UNIFORM_BITS)
