"""Losses with their gradients, defined as PyTorch's (and so Hugging Face's) losses are.

Softmax cross-entropy with an ignore index, mean over the kept rows:
    loss = -(1/N) sum_{n: y_n != -100} log softmax(z_n)[y_n]
    dz_n = (softmax(z_n) - onehot(y_n)) / N   for kept rows,   0 for ignored rows
N is the number of kept rows. With N == 0 the loss is 0 and the gradient 0 (PyTorch returns NaN
there; a batch without a single label carries no signal, and a NaN would poison the optimiser).

Mean squared error (regression), over all N elements:
    loss = (1/N) sum_n (p_n - y_n)^2,   dp_n = 2 (p_n - y_n) / N

Distillation (soft_cross_entropy): the KL divergence from a teacher's softened predictions, as
Hinton et al. (2015) and Turc et al. (2019) use it; the formula is in its docstring.

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


def log_softmax(z):
    """log softmax over the last axis, shifted by the row maximum for stability."""
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def soft_cross_entropy_forward(student_logits, teacher_logits, temperature):
    """Hinton's distillation term, as torch.nn.functional.kl_div(..., reduction="batchmean"):

        p = softmax(t / T),  q = softmax(s / T)                        t, s (B, C)
        loss = T^2 / B * sum_b sum_c p_bc (log p_bc - log q_bc)        KL(p || q) * T^2
        ds = T / B * (q - p)

    The T^2 keeps the gradient's scale comparable across temperatures (Hinton et al. 2015).
    KL differs from the soft cross-entropy -sum p log q by the teacher's entropy, a constant: the
    same gradient, a different loss value. Returns (loss, cache)."""
    T = temperature
    log_p = log_softmax(teacher_logits / T)                   # (B, C)
    log_q = log_softmax(student_logits / T)                   # (B, C)
    p = np.exp(log_p)
    kl = (p * (log_p - log_q)).sum()                          # 0 log 0 = 0: p underflows to 0 exactly
    B = student_logits.shape[0]
    return float(T * T * kl / B), (p, log_q, T)


def soft_cross_entropy_backward(dloss, cache):
    """Returns dstudent_logits (B, C) = dloss * T / B * (softmax(s / T) - softmax(t / T))."""
    p, log_q, T = cache
    return (dloss * T / p.shape[0]) * (np.exp(log_q) - p)

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
