"""Element-wise activations: GELU (exact erf form and tanh approximation), tanh, ReLU.

gelu (hidden_act="gelu", exact):
    y = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt(2))) / 2   (erf from scipy.special)
    dy/dx = Phi(x) + x * phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
gelu_new / gelu_pytorch_tanh (tanh approximation, differs from the exact form by up to ~5e-4):
    u = sqrt(2/pi) (x + 0.044715 x^3),  y = x (1 + tanh u) / 2
    dy/dx = (1 + tanh u) / 2 + x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2
tanh:  y = tanh(x),  dy/dx = 1 - y^2          relu:  y = max(x, 0),  dy/dx = [x > 0]

The hidden activations (the ACTIVATIONS table) take an optional bias b and act on z = x + b: the
feed-forward sublayer hands them the bias of the Linear layer before them, so that the bias is
added as the activation reads its input instead of in a pass of its own over the (B, T, I)
activations (the largest of a layer). Their backward returns dL/dz, which is also dL/dx, and the
Linear layer's backward sums it into the bias gradient as usual.
"""
import math

import numpy as np
from scipy.special import erf as _erf

from ..kernels import accelerated

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def biased(x, b):
    """z = x + b, or x itself when there is no bias."""
    return x if b is None else x + b


@accelerated("gelu_forward")
def gelu_forward(x, b=None):
    """Exact GELU of z = x (+ b); returns (y, cache) with cache = (x, b): z is not stored, the
    backward forms it again."""
    z = biased(x, b)
    phi_cdf = 0.5 * (1.0 + _erf(z * _INV_SQRT_2))             # Phi(z)
    return z * phi_cdf, (x, b)


@accelerated("gelu_backward")
def gelu_backward(dy, cache):
    """dz = dy * (Phi(z) + z phi(z)), z = x (+ b)."""
    z = biased(*cache)
    phi_cdf = 0.5 * (1.0 + _erf(z * _INV_SQRT_2))             # Phi(z)
    phi_pdf = _INV_SQRT_2PI * np.exp(-0.5 * z * z)            # phi(z)
    return dy * (phi_cdf + z * phi_pdf)


def gelu_tanh_forward(x, b=None):
    """tanh-approximated GELU of z = x (+ b); returns (y, cache) with cache = z."""
    z = biased(x, b)
    t = np.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z ** 3))   # tanh u
    return 0.5 * z * (1.0 + t), z


def gelu_tanh_backward(dy, z):
    t = np.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z ** 3))
    du_dz = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * z * z)
    return dy * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du_dz)


def tanh_forward(x):
    """Returns (y, cache) with cache = y."""
    y = np.tanh(x)
    return y, y


def tanh_backward(dy, y):
    return dy * (1.0 - y * y)


def relu_forward(x, b=None):
    """max(z, 0) of z = x (+ b); returns (y, cache) with cache = z."""
    z = biased(x, b)
    return np.maximum(z, 0), z


def relu_backward(dy, z):
    return dy * (z > 0)


# hidden_act name -> (forward, backward)
ACTIVATIONS = {
    "gelu": (gelu_forward, gelu_backward),
    "gelu_new": (gelu_tanh_forward, gelu_tanh_backward),
    "gelu_pytorch_tanh": (gelu_tanh_forward, gelu_tanh_backward),
    "relu": (relu_forward, relu_backward),
}
