"""Losses with their gradients, defined as PyTorch's (and so Hugging Face's) losses are.

Softmax cross-entropy with an ignore index, mean over the kept rows:
    loss = -(1/N) sum_{n: y_n != -100} log softmax(z_n)[y_n]
    dz_n = (softmax(z_n) - onehot(y_n)) / N   for kept rows,   0 for ignored rows
N is the number of kept rows. With N == 0 the loss is 0 and the gradient 0 (PyTorch returns NaN
there; a batch without a single label carries no signal, and a NaN would poison the optimiser).

Mean squared error (regression), over all N elements:
    loss = (1/N) sum_n (p_n - y_n)^2,   dp_n = 2 (p_n - y_n) / N

Binary cross-entropy with logits (multi-label classification: every element an independent yes/no
with a target y in [0, 1]), mean over all N elements, as torch.nn.BCEWithLogitsLoss:
    loss = -(1/N) sum_n [y_n log sigmoid(z_n) + (1 - y_n) log(1 - sigmoid(z_n))]
         =  (1/N) sum_n [max(z_n, 0) - z_n y_n + log(1 + exp(-|z_n|))]     (the stable form)
    dz_n = (sigmoid(z_n) - y_n) / N
"""
import numpy as np

IGNORE_INDEX = -100


def cross_entropy_forward(logits, labels, ignore_index=IGNORE_INDEX):
    """logits (N, C), labels (N,) ints; returns (loss, cache)."""
    keep = labels != ignore_index                             # (N,)
    n_kept = int(keep.sum())
    z = logits - logits.max(axis=-1, keepdims=True)           # (N, C) shifted for stability
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    safe_labels = np.where(keep, labels, 0)
    picked = log_probs[np.arange(len(labels)), safe_labels]   # (N,)
    loss = -(picked * keep).sum() / max(n_kept, 1)
    return float(loss), (log_probs, safe_labels, keep, n_kept)


def cross_entropy_backward(dloss, cache):
    """Returns dlogits (N, C)."""
    log_probs, safe_labels, keep, n_kept = cache
    dlogits = np.exp(log_probs)                               # softmax(z)
    dlogits[np.arange(len(safe_labels)), safe_labels] -= 1.0  # - onehot(y)
    dlogits *= (dloss / max(n_kept, 1)) * keep[:, None]       # / N, ignored rows -> 0
    return dlogits


def mse_forward(pred, target):
    """pred (N,), target (N,); returns (loss, cache)."""
    diff = pred - target
    return float((diff * diff).mean()), diff


def mse_backward(dloss, diff):
    return (2.0 * dloss / diff.size) * diff


def bce_with_logits_forward(logits, targets):
    """logits, targets of the same shape (targets real in [0, 1]); returns (loss, cache)."""
    z = logits
    per_element = np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z)))
    return float(per_element.mean()), (z, targets)


def bce_with_logits_backward(dloss, cache):
    """Returns dlogits = dloss * (sigmoid(z) - y) / N."""
    z, targets = cache
    sigmoid = 0.5 * (1.0 + np.tanh(0.5 * z))                 # 1 / (1 + exp(-z)), without overflow
    return (dloss / z.size) * (sigmoid - targets)
