"""Element-wise activations: GELU (exact erf form and tanh approximation), tanh, ReLU; and the
feed-forward's first half, Linear then activation, as one named operation.

gelu (hidden_act="gelu", exact):
    y = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt(2))) / 2   (erf from scipy.special)
    dy/dx = Phi(x) + x * phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
gelu_new / gelu_pytorch_tanh (tanh approximation, differs from the exact form by up to ~5e-4):
    u = sqrt(2/pi) (x + 0.044715 x^3),  y = x (1 + tanh u) / 2
    dy/dx = (1 + tanh u) / 2 + x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2
tanh:  y = tanh(x),  dy/dx = 1 - y^2          relu:  y = max(x, 0),  dy/dx = [x > 0]

linear_act (the feed-forward's intermediate layer, `intermediate.dense` + `hidden_act`):
    z = x W^T + b,  y = act(z)           backward:  dz = act'(z) * dy,  then Linear's backward
Its reference is exactly that composition; its kernel (kernels/gelu.py) adds b and applies the
GELU in one pass over z.
feed_forward (the feed-forward sublayer's two Linear layers, `intermediate` then `output.dense`):
    y = act(x Wi^T + bi) Wo^T + bo       its backward is the two layers' backward, in reverse
Its reference is linear_act then Linear; its kernel (kernels/feed_forward.py, inference with int8
weights) quantizes act(z) for the second product row by row as the first product's epilogue makes
it, so neither z nor act(z) is written to memory as floats.
"""
import math

import numpy as np

from ..kernels import accelerated
from .linear import linear_backward, linear_forward

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _erf(x):
    """scipy.special.erf, imported at the first call: importing SciPy costs ~26 MB of resident
    memory, which a run on the kernels (whose GELU computes its own erf) never needs."""
    from scipy.special import erf
    return erf(x)


@accelerated("gelu_forward")
def gelu_forward(x):
    """Exact GELU; returns (y, cache) with cache = x."""
    phi_cdf = 0.5 * (1.0 + _erf(x * _INV_SQRT_2))             # Phi(x)
    return x * phi_cdf, x


@accelerated("gelu_backward")
def gelu_backward(dy, x):
    """dx = dy * (Phi(x) + x phi(x))."""
    phi_cdf = 0.5 * (1.0 + _erf(x * _INV_SQRT_2))             # Phi(x)
    phi_pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)            # phi(x)
    return dy * (phi_cdf + x * phi_pdf)


def gelu_tanh_forward(x):
    """tanh-approximated GELU; returns (y, cache) with cache = x."""
    t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))   # tanh u
    return 0.5 * x * (1.0 + t), x


def gelu_tanh_backward(dy, x):
    t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))   # tanh u
    du_dx = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)


def tanh_forward(x):
    """Returns (y, cache) with cache = y."""
    y = np.tanh(x)
    return y, y


def tanh_backward(dy, y):
    return dy * (1.0 - y * y)


def relu_forward(x):
    """Returns (y, cache) with cache = x."""
    return np.maximum(x, 0), x


def relu_backward(dy, x):
    return dy * (x > 0)


# hidden_act name -> (forward, backward)
ACTIVATIONS = {
    "gelu": (gelu_forward, gelu_backward),
    "gelu_new": (gelu_tanh_forward, gelu_tanh_backward),
    "gelu_pytorch_tanh": (gelu_tanh_forward, gelu_tanh_backward),
    "relu": (relu_forward, relu_backward),
}


@accelerated("linear_act_forward")
def linear_act_forward(x, w, b, act):
    """y = act(x W^T + b) for the hidden_act name `act`; returns (y, cache) with
    cache = (Linear's cache, the activation's cache, act)."""
    act_forward, _ = ACTIVATIONS[act]
    z, cache_linear = linear_forward(x, w, b)                 # z = x W^T + b
    y, cache_act = act_forward(z)                             # y = act(z)
    return y, (cache_linear, cache_act, act)


@accelerated("linear_act_backward")
def linear_act_backward(dy, cache):
    """Returns (dx, dw, db)."""
    cache_linear, cache_act, act = cache
    _, act_backward = ACTIVATIONS[act]
    dz = act_backward(dy, cache_act)                          # y = act(z)
    return linear_backward(dz, cache_linear)                  # z = x W^T + b


@accelerated("feed_forward")
def feed_forward(x, wi, bi, wo, bo, act, *, keep_cache=True):
    """y = act(x Wi^T + bi) Wo^T + bo; returns (y, (linear_act's cache, Linear's cache)), or
    (y, None) with keep_cache=False."""
    g, cache_intermediate = linear_act_forward(x, wi, bi, act)   # g = act(x Wi^T + bi)
    y, cache_output = linear_forward(g, wo, bo)                  # y = g Wo^T + bo
    return y, ((cache_intermediate, cache_output) if keep_cache else None)
