"""Element-wise activations: GELU (exact erf form and tanh approximation), tanh, ReLU.

gelu (hidden_act="gelu", exact):
    y = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt(2))) / 2   (erf from scipy.special)
    dy/dx = Phi(x) + x * phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
gelu_new / gelu_pytorch_tanh (tanh approximation, differs from the exact form by up to ~5e-4):
    u = sqrt(2/pi) (x + 0.044715 x^3),  y = x (1 + tanh u) / 2
    dy/dx = (1 + tanh u) / 2 + x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2
tanh:  y = tanh(x),  dy/dx = 1 - y^2          relu:  y = max(x, 0),  dy/dx = [x > 0]
"""
import math

import numpy as np
from scipy.special import erf as _erf

from ..kernels import accelerated

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


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
    t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
    du_dx = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)


def tanh_forward(x):
    """Returns (y, cache) with cache = y."""
    y = np.tanh(x)
    return y, y


def tanh_backward(dy, y):
    return dy * (1.0 - y * y)


def relu_forward(x):
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
