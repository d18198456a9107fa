"""AdamW's update of one tensor in a single pass.

    p <- p (1 - decay);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)

Why it is fast: the NumPy reference runs about ten ufuncs over the tensor, each a full pass over
memory (and two temporaries the size of the tensor). An optimizer step touches every parameter and
its two moments, so for BERT it is limited by memory bandwidth: here each element of p, g, m and v
is read once and p, m, v written once, and the tensor is split over the cores with `prange`.
Every element is computed independently, so the result does not depend on the thread count.
"""
from numba import prange

from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported

_SIGNATURES = [f"void({t}[::1], {t}[::1], {t}[::1], {t}[::1], float64, float64, float64, float64, "
               f"float64, float64, float64)" for t in FLOAT_TYPES]


@njit_per_dtype(_SIGNATURES, cache=True, fastmath=False, parallel=True)
def _adamw(p, g, m, v, lr, beta1, beta2, eps, decay, step_size, inv_sqrt_bc2):
    keep = 1.0 - decay
    for i in prange(p.shape[0]):
        gi = g[i]
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * keep - step_size * (mi / (vi ** 0.5 * inv_sqrt_bc2 + eps))


@register("adamw_update")
def adamw_update(p, g, m, v, lr, beta1, beta2, eps, decay, step_size, inv_sqrt_bc2):
    """In place, like the reference; non-contiguous or mixed-dtype tensors take the reference."""
    if not (supported(p, g, m, v) and all(a.flags.c_contiguous for a in (p, g, m, v))):
        return NotImplemented
    _adamw(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), lr, beta1, beta2, eps,
           decay, step_size, inv_sqrt_bc2)
