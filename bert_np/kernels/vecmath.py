"""exp(z) for z <= 0 as a loop LLVM can vectorise (numba has no vector exp without Intel's SVML).

`math.exp` in a Numba loop is a call into libm per element, so the loop stays scalar and runs ~4x
slower than NumPy's SIMD exp. The softmax and the GELU backward only need exp of values <= 0, which
this computes with plain arithmetic that vectorises:
    exp(z) = 2^k * exp(r),   k = floor(z / ln 2 + 1/2),   r = z - k ln 2  in [-ln2/2, ln2/2]
    exp(r) = sum_{i <= d} r^i / i!     Horner; d = 7 for float32, 12 for float64, where the
                                       remainder (ln2/2)^(d+1) / (d+1)! is below the dtype's eps
    2^k    = the float whose exponent bits are k + bias: built as an integer and reinterpreted
             as a float in the same register (`two_to_the`)
ln 2 is split into a high part with few significant bits and a low part (Cody and Waite), so
k ln 2 is subtracted without rounding error. Below log(smallest normal) the result is 0 (NumPy's
exp gives a subnormal there; the difference is < 1e-37).
The constants come as a tuple of the input's dtype, so float32 input is computed in float32, and
the tuple's length fixes the degree at compile time, so the Horner loop unrolls.
"""
import functools
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_DEGREE = {np.dtype(np.float32): 7, np.dtype(np.float64): 12}
# these flags allow vectorisation but forbid reassociation, which would merge the two ln 2 parts
_FLAGS = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}


@functools.lru_cache(maxsize=None)      # built once per dtype, not at every call
def exp_constants(dtype):
    """(log2 e, ln2 high, ln2 low, log(smallest normal), 1/2, 1/d!, ..., 1/1!, 1/0!) in `dtype`."""
    dtype = np.dtype(dtype)
    ln2_hi = 0.693145751953125                                # 0x3f317200: 15 significant bits
    ln2_lo = math.log(2.0) - ln2_hi
    lowest = math.log(np.finfo(dtype).tiny)
    inv_factorials = [1.0 / math.factorial(i) for i in range(_DEGREE[dtype], -1, -1)]
    return tuple(dtype.type(c) for c in [1.0 / math.log(2.0), ln2_hi, ln2_lo, lowest, 0.5]
                 + inv_factorials)


def exp_constants_type(dtype):
    """The Numba type name of exp_constants(dtype), for explicit signatures."""
    dtype = np.dtype(dtype)
    return f"UniTuple({dtype.name}, {5 + _DEGREE[dtype] + 1})"


@intrinsic
def maxnum(typingctx, a, b):
    """max(a, b) of two floats of one type as LLVM's maxnum, flagged free of NaNs.

    Numba compiles `max(a, b)` to a compare and a select, and LLVM vectorises a loop that reduces
    with those only when the whole function is declared NaN-free, which Numba does not do: the
    softmax's row max stayed scalar, ~0.9 ns per element. A reduction over maxnum vectorises
    (128 float32 values: ~100 ns -> 5 ns).
    """
    def codegen(context, builder, signature, args):
        llvm_type = args[0].type
        name = "llvm.maxnum.f32" if llvm_type == ir.FloatType() else "llvm.maxnum.f64"
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(llvm_type, [llvm_type, llvm_type]), name)
        return builder.call(function, args, fastmath=("nnan", "nsz"))
    if not (isinstance(a, types.Float) and a == b):
        return None
    return a(a, b), codegen


@intrinsic
def two_to_the(typingctx, k):
    """2^k for a float k that holds an integer with 2^k in the normal range of its type.

    The float with biased exponent k + bias and a zero mantissa is 2^k: k is converted to the
    integer type of the same width, the bias added, the sum shifted into the exponent field, and
    the bits reinterpreted as a float (an LLVM bitcast, free in a vector register). Numba has no
    such reinterpretation of a scalar; writing the integers into an integer view of an array and
    reading them back as floats costs a second pass and a scratch array.
    """
    layout = {types.float32: (32, 23, 127), types.float64: (64, 52, 1023)}
    if k not in layout:
        return None
    width, mantissa_bits, exponent_bias = layout[k]

    def codegen(context, builder, signature, args):
        integer = ir.IntType(width)
        biased = builder.add(builder.fptosi(args[0], integer), integer(exponent_bias))
        return builder.bitcast(builder.shl(biased, integer(mantissa_bits)), args[0].type)
    return k(k), codegen


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _exp_element(z, consts):
    """exp(z) for one z <= 0 (see the module docstring); 0 below log(smallest normal)."""
    log2e, ln2_hi, ln2_lo, lowest, half = consts[0], consts[1], consts[2], consts[3], consts[4]
    zc = max(z, lowest)
    k = np.floor(zc * log2e + half)                           # nearest integer to z / ln 2
    r = (zc - k * ln2_hi) - k * ln2_lo                        # |r| <= ln2 / 2
    p = consts[5]
    for i in range(6, len(consts)):
        p = p * r + consts[i]                                 # Horner: sum r^i / i!
    e = p * two_to_the(k)
    return e if z >= lowest else e - e


@njit(cache=True, fastmath=_FLAGS)
def exp_nonpositive(z, shift, out, consts):
    """out[j] = exp(z[j] - shift) for z[j] <= shift; z, out (n,) distinct arrays (if they overlap,
    LLVM's run-time alias check sends the loop down its scalar path, ~10x slower); consts from
    exp_constants(dtype). The shift is the softmax's row max, subtracted here rather than in a
    pass of its own. A function of its own, so that callers compiled with reassociation (for their
    sums) cannot merge the two parts of ln 2."""
    for j in range(z.shape[0]):
        out[j] = _exp_element(z[j] - shift, consts)
