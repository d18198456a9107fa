"""BERT's input embedding, LayerNorm(E_word[ids] + E_pos[t] + E_type[types]), in one pass over the
rows; and the embedding's backward, a scatter-add of rows: dtable[ids[n]] += dy[n], skipping
padding_id.

Forward: the reference gathers the word rows into a (B, T, H) array, adds the position rows into
a second one, gathers and adds the token-type rows, and LayerNorm reads the sum back: four
passes over (B, T, H) arrays, on one core. Here each token's three table rows are summed into
its output row, which LayerNorm (`layernorm.normalise_row`) then normalises while it is in L1;
the tokens are split over the cores. The sum is formed in the reference's order,
(word + position) + token type, in a function compiled without fast math, so that it equals the
reference's sum bit for bit. Ids outside a table go to the reference, which raises IndexError
(or, for a negative id, counts from the end as NumPy does).

Backward:

np.add.at, the reference, handles any index pattern element by element through NumPy's generic
ufunc machinery. Here each token's gradient row is added with one contiguous (vectorised) loop.
It runs on one thread: tokens that share an id add into the same row, and the whole job (B*T rows
of H values) is small next to the products around it. Rows are added in token order, as
np.add.at does, so the result is the reference's bit for bit. Ids outside the table go to the
reference, which raises IndexError.
"""
import numpy as np
from numba import njit, prange

from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported
from .layernorm import normalise_row

_SIGNATURES = [f"void({t}[:, ::1], int64[::1], int64, {t}[:, ::1])" for t in FLOAT_TYPES]
_FORWARD_SIGNATURES = [
    f"void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}[:, ::1], "
    f"{t}[::1], {t}[::1], float64, int64[::1], int64[::1], int64)" for t in FLOAT_TYPES]


@njit(cache=True, fastmath=False, error_model="numpy")
def _sum_rows(word, position, token_type, out):
    """out = (word + position) + token_type, element by element, in the reference's order (no
    fast math: reassociation could change the last bit)."""
    for h in range(out.shape[0]):
        out[h] = word[h] + position[h] + token_type[h]


@njit_per_dtype(_FORWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _embed_rows(y, xhat, rstd, word, position, token_type, w, b, eps, ids, types, T):
    """Row n of y (N, H) = LayerNorm(word[ids[n]] + position[n % T] + token_type[types[n]]), with
    xhat[n] and rstd[n, 0] as layernorm_forward keeps them; ids, types (N,) = (B*T,) in range."""
    for n in prange(ids.shape[0]):
        row = y[n]
        _sum_rows(word[ids[n]], position[n % T], token_type[types[n]], row)
        rstd[n, 0] = normalise_row(row, w, b, eps, row, xhat[n])


def _in_table(ids, rows):
    return ids.size == 0 or (ids.min() >= 0 and ids.max() < rows)


@register("embeddings_layernorm_forward")
def embeddings_layernorm_forward(input_ids, token_type_ids, word, position, token_type, w, b,
                                 eps):
    """(y, (xhat, rstd, w)) like the reference: y (B, T, H), rstd (B, T, 1)."""
    if (not supported(word, position, token_type, w, b) or input_ids.ndim != 2
            or token_type_ids.shape != input_ids.shape):
        return NotImplemented
    (B, T), H = input_ids.shape, word.shape[1]
    if position.shape[1] != H or token_type.shape[1] != H or w.shape != (H,) or b.shape != (H,):
        return NotImplemented
    ids = np.ascontiguousarray(input_ids, dtype=np.int64).reshape(-1)          # (B*T,)
    types = np.ascontiguousarray(token_type_ids, dtype=np.int64).reshape(-1)
    if not (_in_table(ids, word.shape[0]) and _in_table(types, token_type.shape[0])
            and T <= position.shape[0]):
        return NotImplemented
    dtype = word.dtype
    y, xhat = np.empty((B * T, H), dtype), np.empty((B * T, H), dtype)
    rstd = np.empty((B * T, 1), dtype)
    _embed_rows(y, xhat, rstd, np.ascontiguousarray(word), np.ascontiguousarray(position),
                np.ascontiguousarray(token_type), np.ascontiguousarray(w), np.ascontiguousarray(b),
                float(eps), ids, types, T)
    return y.reshape(B, T, H), (xhat.reshape(B, T, H), rstd.reshape(B, T, 1), w)


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
    if not (_in_table(ids1, dtable.shape[0]) and supported(dy, dtable) and dtable.flags.c_contiguous):
        return NotImplemented       # the reference raises on ids out of range
    dy2 = np.ascontiguousarray(dy).reshape(-1, dy.shape[-1])
    _scatter_add_rows(dy2, ids1, -1 if padding_id is None else padding_id, dtable)
