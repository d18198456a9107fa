"""Embedding lookup: a row of a table per token id.

forward:   y[b, t] = E[ids[b, t]]                      ids (B, T)  E (V, H)  y (B, T, H)
backward:  dE[v] += sum over (b, t) with ids[b, t] == v of dy[b, t]
Several tokens can share an id, so the backward is a scatter-add (np.add.at), not an assignment.
BERT's input embedding is the sum of three lookups (word, position, token type); see model.py.
"""
import numpy as np


def embedding_forward(ids, table):
    """Returns table[ids]; the backward only needs ids, which the caller keeps."""
    return table[ids]                                        # (B, T, H)


def embedding_backward(dy, ids, dtable):
    """Adds the gradient of y = table[ids] into dtable (V, H), in place."""
    np.add.at(dtable, ids.reshape(-1), dy.reshape(-1, dy.shape[-1]))
