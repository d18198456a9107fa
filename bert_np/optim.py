"""AdamW, the warmup + linear-decay learning-rate schedule, and global-norm gradient clipping.

AdamW (Loshchilov & Hutter), in the form torch.optim.AdamW computes it, at step t = 1, 2, ...:
    p <- p - lr * wd * p                          decoupled weight decay (not on biases/LayerNorm)
    m <- b1 m + (1 - b1) g                        first moment
    v <- b2 v + (1 - b2) g^2                      second moment
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
Schedule (transformers' get_linear_schedule_with_warmup), for the k-th update, k = 0, 1, ...:
    lr_k = lr * k / warmup                        while k < warmup
    lr_k = lr * max(0, (total - k) / (total - warmup))   afterwards
Clipping: g <- g * min(1, max_norm / (||g||_2 + 1e-6)), ||g||_2 over all parameters together.
"""
from __future__ import annotations

import numpy as np

from .kernels import accelerated


def decays(name: str) -> bool:
    """Weight decay applies to weight matrices and embeddings, not to biases or LayerNorm."""
    return not (name.endswith("bias") or "LayerNorm" in name)


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most max_norm; returns the
    norm before clipping (left untouched when that norm is not finite). `max_norm` must be > 0
    (math.inf: no clipping)."""
    if not max_norm > 0:  # also refuses NaN: a negative norm would turn descent into ascent
        raise ValueError(f"max_norm must be > 0 (math.inf: no clipping), got {max_norm}")
    total = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))
    if not np.isfinite(total):
        return total  # nothing sensible to scale; the caller stops on a non-finite norm
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for g in grads.values():
            g *= scale
    return total


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate for update number `step` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


@accelerated("adamw_update")
def adamw_update(p, g, m, v, lr, beta1, beta2, eps, decay, step_size, inv_sqrt_bc2):
    """One AdamW step of one tensor, in place (see the module docstring; decay = lr * wd or 0)."""
    if decay:
        p *= 1 - decay                                     # p <- p - lr wd p
    m *= beta1
    m += (1 - beta1) * g                                   # m <- b1 m + (1 - b1) g
    v *= beta2
    v += (1 - beta2) * (g * g)                             # v <- b2 v + (1 - b2) g^2
    denom = np.sqrt(v)
    denom *= inv_sqrt_bc2
    denom += eps                                           # sqrt(v) / sqrt(1 - b2^t) + eps
    p -= step_size * (m / denom)


class AdamW:
    """AdamW over a dict of parameters, updated in place by `step(grads)`.

    `schedule` (optional) maps the 0-based update number to a multiplier of `lr`, for example
    `lambda k: linear_warmup_decay(k, warmup, total)`."""

    def __init__(self, params: dict, lr: float = 1e-4, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01, schedule=None):
        if not (0 <= lr < np.inf and 0 < eps < np.inf and 0 <= weight_decay < np.inf
                and all(0 <= b < 1 for b in betas)):  # NaN fails every comparison
            raise ValueError(f"invalid AdamW settings: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        for name, p in params.items():  # the update is in place (and a Numba kernel's TypeError
            if not (isinstance(p, np.ndarray) and p.flags.writeable):  # would not say why)
                raise ValueError(f"parameter {name} is not a writeable NumPy array (read-only, "
                                 "e.g. memory-mapped from a file?); AdamW updates parameters in "
                                 "place: pass a copy (np.array(p))")
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.schedule = schedule
        self.t = 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def current_lr(self) -> float:
        """The learning rate the next step will use."""
        return self.lr * (self.schedule(self.t) if self.schedule else 1.0)

    def step(self, grads: dict) -> None:
        if grads.keys() != self.params.keys():
            missing = sorted(self.params.keys() - grads.keys())
            extra = sorted(grads.keys() - self.params.keys())
            raise ValueError(f"gradients do not match the parameters: missing {missing}, extra {extra}")
        lr = self.current_lr()
        self.t += 1
        b1, b2 = self.betas
        step_size = lr / (1 - b1 ** self.t)
        inv_sqrt_bc2 = 1.0 / np.sqrt(1 - b2 ** self.t)
        for name, p in self.params.items():
            decay = lr * self.weight_decay if decays(name) else 0.0
            adamw_update(p, grads[name], self.m[name], self.v[name], lr, b1, b2, self.eps, decay,
                         step_size, inv_sqrt_bc2)

    def state_dict(self) -> dict:
        """Everything needed to continue bit for bit: step count, moments, hyper-parameters."""
        return {"t": self.t, "lr": self.lr, "betas": self.betas, "eps": self.eps,
                "weight_decay": self.weight_decay,
                "m": {k: v.copy() for k, v in self.m.items()},
                "v": {k: v.copy() for k, v in self.v.items()}}

    def load_state_dict(self, state: dict) -> None:
        for key in ("m", "v"):
            if state[key].keys() != self.params.keys():
                raise ValueError(f"optimizer state {key!r} does not match the parameters")
            for name, value in state[key].items():
                if value.shape != self.params[name].shape:
                    raise ValueError(f"optimizer state {key}[{name}] has shape {value.shape}, "
                                     f"parameter has {self.params[name].shape}")
        self.t = int(state["t"])
        self.lr, self.betas = float(state["lr"]), tuple(state["betas"])
        self.eps, self.weight_decay = float(state["eps"]), float(state["weight_decay"])
        self.m = {k: np.array(v, dtype=self.params[k].dtype) for k, v in state["m"].items()}
        self.v = {k: np.array(v, dtype=self.params[k].dtype) for k, v in state["v"].items()}
