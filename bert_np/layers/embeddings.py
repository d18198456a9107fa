"""Embedding lookup: a row of a table per token id.

forward:   y[b, t] = E[ids[b, t]]                      ids (B, T)  E (V, H)  y (B, T, H)
backward:  dE[v] += sum over (b, t) with ids[b, t] == v of dy[b, t]
Several tokens can share an id, so the backward is a scatter-add (np.add.at), not an assignment.
With a padding id (PyTorch's `padding_idx`, which transformers sets to pad_token_id for the word
embeddings) the lookups of that id add nothing: the padding row keeps its value during training.
BERT's input embedding is the sum of three lookups (word, position, token type), normalised:
    x = LayerNorm(E_word[ids] + E_pos[0..T-1] + E_type[types])
the named operation embeddings_layernorm_forward, whose backward is LayerNorm's backward and then
one embedding backward per table (encoder.py).
"""
import numpy as np

from ..kernels import accelerated
from .layernorm import layernorm_forward


def embedding_forward(ids, table):
    """Returns table[ids]; the backward only needs ids, which the caller keeps."""
    return table[ids]                                        # (B, T, H)


@accelerated("embeddings_layernorm_forward")
def embeddings_layernorm_forward(input_ids, token_type_ids, word, position, token_type, w, b,
                                 eps):
    """LayerNorm(word[ids] + position[0..T-1] + token_type[types]): returns (x (B, T, H),
    LayerNorm's cache); ids (B, T). (The kernel sums and normalises each token's row in one pass.)"""
    T = input_ids.shape[1]
    x = embedding_forward(input_ids, word)                    # (B, T, H)
    x = x + position[:T]                                      # (B, T, H)
    x += embedding_forward(token_type_ids, token_type)
    return layernorm_forward(x, w, b, eps)


@accelerated("embedding_backward")
def embedding_backward(dy, ids, dtable, padding_id=None):
    """Adds the gradient of y = table[ids] into dtable (V, H), in place, skipping padding_id."""
    ids = ids.reshape(-1)                                     # (B*T,)
    dy = dy.reshape(-1, dy.shape[-1])                         # (B*T, H)
    if padding_id is not None:
        keep = ids != padding_id
        ids, dy = ids[keep], dy[keep]
    np.add.at(dtable, ids, dy)
