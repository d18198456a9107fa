"""Dropout's random numbers: the counter-based SplitMix64 uniforms of bert_np/rng.py.

Compared, and why these bounds:
  - the first values against SplitMix64 written out with Python integers (an independent, exact
    implementation of the published algorithm): equal exactly.
  - 2^20 numbers for each of 3 keys: a 64-bin histogram's chi-square below the 0.999 quantile of
    chi2(63); lag-1 correlation within 5 / sqrt(n); the kept fraction of a mask within 5 binomial
    standard deviations of 1 - p. The keys are fixed, so these are deterministic checks with
    bounds that a correct uniform generator meets with overwhelming probability.
  - masks from two keys agree on p^2 + (1 - p)^2 of the elements (independence), within 5 sd.
"""
import numpy as np
import pytest
from scipy import stats

from bert_np.layers.dropout import dropout_forward
from bert_np.rng import counter_uniform, draw_key

N = 1 << 20
KEYS = [0, 12345, 2 ** 64 - 1]


def splitmix64_python(key, i):
    """The SplitMix64 output after i + 1 steps from state `key`, with Python's exact integers."""
    m = (1 << 64) - 1
    z = (key + (i + 1) * 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


@pytest.mark.parametrize("key", KEYS)
def test_uniforms_are_the_top_24_bits_of_splitmix64(key):
    u = counter_uniform(key, 20, np.float64)
    expected = [(splitmix64_python(key, i) >> 40) / 2 ** 24 for i in range(20)]
    assert u.tolist() == expected


@pytest.mark.parametrize("key", KEYS)
def test_uniforms_fill_the_bins_evenly_and_are_uncorrelated(key):
    u = counter_uniform(key, N, np.float32)
    assert u.min() >= 0.0 and u.max() < 1.0
    counts = np.bincount((u * 64).astype(np.int64), minlength=64)
    chi2 = ((counts - N / 64) ** 2 / (N / 64)).sum()
    assert chi2 < stats.chi2.ppf(0.999, 63), f"chi-square {chi2:.1f} over 64 bins"
    lag1 = np.corrcoef(u[:-1], u[1:])[0, 1]
    assert abs(lag1) < 5 / np.sqrt(N), f"lag-1 correlation {lag1:.2e}"


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_kept_fraction_and_independence_of_two_calls(p):
    rng = np.random.default_rng(3)
    x = np.ones(N, np.float32)
    _, mask_a = dropout_forward.reference(x, p, rng)
    _, mask_b = dropout_forward.reference(x, p, rng)          # the next key
    sd = np.sqrt(p * (1 - p) / N)
    assert abs((mask_a > 0).mean() - (1 - p)) < 5 * sd
    agree = ((mask_a > 0) == (mask_b > 0)).mean()
    expected = p ** 2 + (1 - p) ** 2
    assert abs(agree - expected) < 5 * np.sqrt(expected * (1 - expected) / N)


def test_masks_are_reproduced_from_the_generator_state():
    """One key per call from the model's Generator: the same state gives the same masks."""
    x = np.ones((4, 7), np.float64)
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    assert draw_key(a) == draw_key(b)
    np.testing.assert_array_equal(dropout_forward.reference(x, 0.3, a)[1],
                                  dropout_forward.reference(x, 0.3, b)[1])
