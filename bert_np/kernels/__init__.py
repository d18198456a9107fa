"""One switch between the NumPy reference of each hot operation and its Numba kernel.

Every hot operation is written once in plain NumPy, in `bert_np/layers/`, where the formula is easy
to read. That function is wrapped with `@accelerated("op_name")`. A module in this package may
register a Numba kernel under the same name with `@register("op_name")`; the kernel takes the same
arguments and returns the same values (and the same cache layout) as the reference.

At call time the wrapper runs
  - the NumPy reference when the backend is "numpy",
  - the Numba kernel when the backend is "numba" (the reference if no kernel is registered),
  - under "auto" (the default), the kernel only for the operations listed in AUTO_NUMBA, the ones
    where the kernel measured faster in `bench/kernels.py`.

Choose with `bert_np.set_backend("numpy" | "numba" | "auto")` or the environment variable
`BERT_NP_BACKEND`. `op.reference` is always the NumPy function, for tests and notebooks.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Callable

BACKENDS = ("numpy", "numba", "auto")

# operations whose Numba kernel beat NumPy in bench/kernels.py and in the step profiles (see the
# README). The GEMM (linear_forward / linear_backward) reaches 0.56-0.69x OpenBLAS at BERT-base
# shapes, and the attention's batched products 0.4-1.4x NumPy's stacked BLAS calls, so "auto" keeps
# np.matmul for both (the forward's products run inside the fused attention_context_forward).
# Dropout's kernel is ~20x its reference, the embedding backward's ~24x; add_bias uses its kernel
# only for outputs over 8 MiB (see kernels/gemm.py).
AUTO_NUMBA: frozenset[str] = frozenset({
    "attention_context_forward", "attention_softmax_forward", "attention_softmax_backward",
    "layernorm_forward", "add_layernorm_forward", "layernorm_backward",
    "gelu_forward", "gelu_backward",
    "adamw_update",
    "dropout_forward", "embedding_backward",
    "add_bias",
})

_KERNEL_MODULES: tuple[str, ...] = ("gemm", "batched", "softmax", "layernorm", "gelu", "optim",
                                    "dropout", "embeddings", "attention")
_kernels: dict[str, Callable] = {}
_loaded = False
_backend = "auto"


def set_backend(name: str) -> None:
    """Select "numpy", "numba" or "auto" for every accelerated operation."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    _backend = name


def get_backend() -> str:
    return _backend


def register(op_name: str) -> Callable:
    """Decorator for a Numba kernel that replaces the NumPy reference named `op_name`."""
    def decorate(kernel: Callable) -> Callable:
        _kernels[op_name] = kernel
        return kernel
    return decorate


def _load_kernels() -> None:
    """Import the kernel modules (compiling them, or loading them from Numba's on-disk cache)."""
    global _loaded
    for module in _KERNEL_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    _loaded = True


def kernel_for(op_name: str) -> Callable | None:
    """The Numba kernel the current backend selects for `op_name`, or None for the reference."""
    if _backend == "numpy" or (_backend == "auto" and op_name not in AUTO_NUMBA):
        return None
    if not _loaded:
        _load_kernels()
    return _kernels.get(op_name)


def accelerated(op_name: str) -> Callable:
    """Decorator for a NumPy reference that a Numba kernel may replace (see the module docstring)."""
    def decorate(reference: Callable) -> Callable:
        @functools.wraps(reference)
        def dispatch(*args, **kwargs):
            kernel = kernel_for(op_name)
            return (kernel or reference)(*args, **kwargs)
        dispatch.reference = reference
        dispatch.op_name = op_name
        return dispatch
    return decorate


set_backend(os.environ.get("BERT_NP_BACKEND", "auto"))
