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

Masks that do not depend on how a batch is split (data-parallel ranks, gradient accumulation):
training passes a `DropoutKeys` where a Generator would go. It holds one key drawn per training
step and the global index of its first example; the n-th dropout call of a forward pass gets
key_n = SplitMix64(step key, n), the same in every slice of the step's batch, and its element i
is numbered first_example * (elements per example) + i, as if the whole batch were one array.
"""
import numpy as np

GAMMA = np.uint64(0x9E3779B97F4A7C15)     # SplitMix64's increment (2^64 / golden ratio, odd)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)     # the multipliers of its finalising mix
MIX_2 = np.uint64(0x94D049BB133111EB)
SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))
UNIFORM_BITS = 24                         # u keeps the top 24 bits of z


class DropoutKeys:
    """The dropout randomness of one forward pass over examples first_example, first_example + 1,
    ... of a training step's batch: call n's key is splitmix64(step_key, n)."""

    def __init__(self, step_key, first_example: int = 0):
        self.step_key, self.first_example, self.calls = int(step_key), int(first_example), 0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "DropoutKeys":
        """One step's keys: a single draw from the model's Generator."""
        return cls(rng.integers(0, 2 ** 64, dtype=np.uint64))

    def for_rows(self, first_example: int) -> "DropoutKeys":
        """The same step's keys for a forward pass starting at another example of the batch."""
        return DropoutKeys(self.step_key, first_example)

    def next_key(self) -> np.uint64:
        self.calls += 1
        return np.uint64(splitmix64_int(self.step_key, self.calls - 1))


def splitmix64_int(key: int, i: int) -> int:
    """SplitMix64's output i (z_i of the module docstring, all 64 bits), with Python integers."""
    m = (1 << 64) - 1
    z = (key + (i + 1) * int(GAMMA)) & m
    z = ((z ^ (z >> 30)) * int(MIX_1)) & m
    z = ((z ^ (z >> 27)) * int(MIX_2)) & m
    return z ^ (z >> 31)


def draw_key(rng) -> np.uint64:
    """The 64-bit key of one dropout call: drawn from the model's Generator, or the next key of a
    DropoutKeys."""
    if isinstance(rng, DropoutKeys):
        return rng.next_key()
    return rng.integers(0, 2 ** 64, dtype=np.uint64)


def first_element(rng, shape) -> int:
    """The counter of element 0 of an array of `shape` (examples along axis 0): 0 for a
    Generator, first_example * (elements per example) for a DropoutKeys."""
    if not isinstance(rng, DropoutKeys) or not shape or shape[0] == 0:
        return 0
    return rng.first_example * (int(np.prod(shape)) // shape[0])


def counter_uniform(key, n: int, dtype, first: int = 0) -> np.ndarray:
    """u (n,) in [0, 1) as the module docstring defines it, for elements first .. first + n - 1,
    in `dtype`."""
    z = np.arange(first + 1, first + n + 1, dtype=np.uint64) * GAMMA + np.uint64(key)  # mod 2^64
    z = (z ^ (z >> SHIFTS[0])) * MIX_1
    z = (z ^ (z >> SHIFTS[1])) * MIX_2
    z ^= z >> SHIFTS[2]
    top_bits = z >> np.uint64(64 - UNIFORM_BITS)
    return top_bits.astype(dtype) * np.dtype(dtype).type(2.0 ** -UNIFORM_BITS)
