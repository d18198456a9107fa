"""The embedding's backward, a scatter-add of rows: dtable[ids[n]] += dy[n], skipping padding_id.

np.add.at, the reference, handles any index pattern element by element through NumPy's generic
ufunc machinery. Here each token's gradient row is added with one contiguous (vectorised) loop.
It runs on one thread: tokens that share an id add into the same row, and the whole job (B*T rows
of H values) is small next to the products around it. Rows are added in token order, as
np.add.at does, so the result is the reference's bit for bit. Ids outside the table go to the
reference, which raises IndexError.
"""
import numpy as np
from numba import njit

from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported

_SIGNATURES = [f"void({t}[:, ::1], int64[::1], int64, {t}[:, ::1])" for t in FLOAT_TYPES]


@njit_per_dtype(_SIGNATURES, cache=True)
def _scatter_add_rows(dy, ids, padding_id, dtable):
    """dtable[ids[n]] += dy[n] for every n with ids[n] != padding_id; dy (N, H), ids (N,)."""
    for n in range(ids.shape[0]):
        row = ids[n]
        if row != padding_id:
            for h in range(dy.shape[1]):
                dtable[row, h] += dy[n, h]


@register("embedding_backward")
def embedding_backward(dy, ids, dtable, padding_id=None):
    """In place into dtable, like the reference."""
    ids1 = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    in_range = ids1.size == 0 or (ids1.min() >= 0 and ids1.max() < dtable.shape[0])
    if not (in_range and supported(dy, dtable) and dtable.flags.c_contiguous):
        return NotImplemented       # the reference raises on ids out of range
    dy2 = np.ascontiguousarray(dy).reshape(-1, dy.shape[-1])
    _scatter_add_rows(dy2, ids1, -1 if padding_id is None else padding_id, dtable)
