"""One switch between the NumPy reference of each hot operation and its Numba kernel.

Every hot operation is written once in plain NumPy, in `bert_np/layers/`, where the formula is easy
to read. That function is wrapped with `@accelerated("op_name")`. A module in this package may
register a Numba kernel under the same name with `@register("op_name")`; the kernel takes the same
arguments and returns the same values (and the same cache layout) as the reference. A kernel that
cannot serve a call (a dtype it is not compiled for, an odd layout) returns `NotImplemented` before
it touches anything, and the dispatcher runs the reference instead: the kernels never import the
layers, and this package imports nothing from `bert_np.layers` or `bert_np.optim`.

At call time the wrapper runs
  - the NumPy reference when the backend is "numpy",
  - the Numba kernel when the backend is "numba" (the reference if no kernel is registered),
  - under "auto" (the default), the kernel only for the operations listed in AUTO_NUMBA, the ones
    where the kernel measured faster in `bench/kernels.py`.

Choose with `bert_np.set_backend("numpy" | "numba" | "auto")` or the environment variable
`BERT_NP_BACKEND`. `op.reference` is always the NumPy function, for tests and notebooks.
"""
from __future__ import annotations

import contextlib
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
    "attention_forward", "attention_context_forward", "attention_softmax_forward",
    "attention_softmax_backward",
    "layernorm_forward", "add_layernorm_forward", "layernorm_backward",
    "gelu_forward", "gelu_backward", "linear_act_forward",
    "adamw_update",
    "dropout_forward", "embedding_backward", "embeddings_layernorm_forward",
    "add_bias",
    "quantize_rows", "int8_matmul", "int8_linear_forward",   # the reference's int32 product is
    "feed_forward",                                         # not BLAS: ~100x slower
})

# the module of this package that registers each operation's kernel; a run imports (and so
# compiles, or loads from Numba's cache) only the modules of the operations it calls
KERNEL_MODULE: dict[str, str] = {
    "linear_forward": "gemm", "linear_backward": "gemm", "add_bias": "gemm",
    "batched_matmul": "batched", "batched_matmul_nt": "batched", "batched_matmul_tn": "batched",
    "attention_softmax_forward": "softmax", "attention_softmax_backward": "softmax",
    "layernorm_forward": "layernorm", "add_layernorm_forward": "layernorm",
    "layernorm_backward": "layernorm",
    "gelu_forward": "gelu", "gelu_backward": "gelu", "linear_act_forward": "gelu",
    "adamw_update": "optim", "dropout_forward": "dropout", "embedding_backward": "embeddings",
    "embeddings_layernorm_forward": "embeddings",
    "attention_context_forward": "attention", "attention_forward": "attention",
    "quantize_rows": "int8", "int8_matmul": "int8", "int8_linear_forward": "int8",
    "feed_forward": "feed_forward",
}
_kernels: dict[str, Callable] = {}
_backend = "auto"


def set_backend(name: str) -> None:
    """Select "numpy", "numba" or "auto" for every accelerated operation."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    _backend = name


def get_backend() -> str:
    return _backend


@contextlib.contextmanager
def using_backend(name: str):
    """`with using_backend("numpy"):` runs a block on one backend, then restores the one before."""
    before = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(before)


def register(op_name: str) -> Callable:
    """Decorator for a Numba kernel that replaces the NumPy reference named `op_name`."""
    def decorate(kernel: Callable) -> Callable:
        _kernels[op_name] = kernel
        return kernel
    return decorate


def _load_kernels() -> None:
    """Import every kernel module (each kernel compiles when a call first needs it)."""
    for module in sorted(set(KERNEL_MODULE.values())):
        importlib.import_module(f"{__name__}.{module}")


def kernel_for(op_name: str) -> Callable | None:
    """The Numba kernel the current backend selects for `op_name`, or None for the reference."""
    if _backend == "numpy" or (_backend == "auto" and op_name not in AUTO_NUMBA):
        return None
    if op_name not in _kernels and op_name in KERNEL_MODULE:
        importlib.import_module(f"{__name__}.{KERNEL_MODULE[op_name]}")
    return _kernels.get(op_name)


def accelerated(op_name: str) -> Callable:
    """Decorator for a NumPy reference that a Numba kernel may replace (see the module docstring)."""
    def decorate(reference: Callable) -> Callable:
        @functools.wraps(reference)
        def dispatch(*args, **kwargs):
            kernel = kernel_for(op_name)
            if kernel is not None:
                result = kernel(*args, **kwargs)
                if result is not NotImplemented:
                    return result
            return reference(*args, **kwargs)
        dispatch.reference = reference
        dispatch.op_name = op_name
        return dispatch
    return decorate


set_backend(os.environ.get("BERT_NP_BACKEND", "auto"))
