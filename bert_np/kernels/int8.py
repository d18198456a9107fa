"""Dynamic int8 Linear layer in Numba: quantize the rows of x, int8 x int8 product with int32
accumulators, dequantize and add the bias in the product's epilogue. The formulas are the
reference's, in bert_np/layers/quantized_linear.py; every result here is equal to the reference's,
bit for bit (integer sums are exact, and the float steps are the same operations in the same order,
with no fused multiply-add: the epilogue is compiled without fastmath).

Three paths compute the product C[n, o] = sum_k x_q[n, k] W_q[o, k]; the first the process can
run is chosen at its first product, from the CPU features Numba compiles for (and, for AMX, the
OS's grant: `_amx_permitted`); `using_path` forces one, for tests and benchmarks. All share:
  - Offset. The quantization pass writes x_q + 128 as uint8 (0..254), and the product subtracts
    128 * sum_k W_q[o, k]: (x_q + 128) W_q^T - 128 W_q^T = x_q W_q^T, exactly. An unsigned
    operand is what the CPU's u8 x s8 dot-product instructions take.
  - Edges: rows of x past N are padding rows of the quantized copy (x_q = 0, never stored).
  - Epilogue: int32 -> float, (acc * s_x) * s_w (+ b), the reference's operations in its order.

"vnni" (`_product_vnni`, CPUs with AVX-512 VNNI): vpdpbusd, 64 multiply-adds per instruction.
  1. LLVM forms vpdpbusd from no plain loop we wrote (see "portable"), so `_vnni_tile` writes the
     register tile in LLVM IR around the intrinsic `llvm.x86.avx512.vpdpbusd.512` (LLVM 22 declares
     it <16 x i32>(<16 x i32>, <64 x i8>, <64 x i8>); the <16 x i32> operand form of older LLVMs
     is auto-upgraded). In each of 16 int32 lanes it adds 4 products of unsigned bytes (x) by
     signed bytes (W): exact, 4 * 255 * 127 < 2^31.
  2. Packed weights (`_pack`): panels of 64 output channels; in a panel, for each group of 4
     consecutive k, one 256-byte row = 4 vectors of 16 channels x 4 k. x is read 4 bytes at a time
     (its uint8 rows viewed as int32) and broadcast to the 16 lanes. K is padded to a multiple of 4
     with zero weights (and x = 128 there), channels past O are zero weights. The packing is done
     once per weight array and kept while it lives (`packed_weight`); files keep [out, in].
  3. Register tile: 4 rows of x by 64 channels, 16 zmm accumulators; per k-group 4 vector loads of
     W, 4 broadcasts of x and 16 vpdpbusd (checked in the assembly by tests/test_quantize.py).
  4. Blocking: a parallel job is 64 rows of x by one panel; for each block of 64 k-groups the
     panel's 16 KiB slice stays in L1 while the job's 16 row tiles pass it.
  5. The sums start at -128 sum_k W_q[o, k] (packed beside the panels), so the offset costs
     nothing after the product, and the epilogue reads each row of the job's int32 block with
     0-based loops over 1-D rows, which LLVM vectorises with plain loads and stores. Indexed as
     y[r0 + i, o0 + j], the same loops compile to gathers and scatters (checked in the tests),
     which hold a product with K = 384 to ~290 GOP/s on one core, against ~450 this way.

"amx" (`_product_amx`, CPUs with AMX-INT8: Sapphire Rapids and later): tdpbusd, 16 x 16 int32
sums of 64 products each per instruction (16384 multiply-adds), on tiles of 16 rows x 64 bytes.
  1. The intrinsics `llvm.x86.ldtilecfg`, `tileloadd64`, `tdpbusd`, `tilestored64` and
     `tilerelease` take tile numbers as immediates; `_amx_block` writes one 32-row x 32-channel
     block in LLVM IR with them: tiles 0-3 the 2 x 2 int32 sums, 4-5 two 16-row slices of x, 6-7
     two 16-channel slices of the weights, four tdpbusd per 64 k.
  2. The weights are the VNNI path's packed panels: 16 consecutive 256-byte rows of a panel,
     16 channels wide, are the B tile tdpbusd takes, loaded with the panel's row stride. K is
     padded to a multiple of 64 (zero weights, x = 128), the rows of x to a multiple of 32.
  3. A parallel job is 64 rows of x by one panel, as on the VNNI path: it configures the tiles
     (the configuration is per thread), runs its 2 x 2 blocks, releases the tiles, and shares the
     VNNI path's epilogue. The sums start at -128 sum_k W_q[o, k], loaded as a tile with row
     stride 0. One core, N = 2048: K x O = 384 x 1536 ~800 GOP/s, 1536 x 384 ~1700, against
     ~450 and ~590 for the VNNI path (the epilogue's writes of y bound the first).
  4. Linux gives a process the tiles' 8 KiB of register state only on request (arch_prctl
     ARCH_REQ_XCOMP_PERM, Linux 5.16+), made at the first product, never on import; where it is
     refused the VNNI path serves.

"portable" (`_product`, every CPU): a plain loop that LLVM vectorises for what the CPU has.
  1. The reduction over k is a loop on int32-widened values, accumulated in int32
     (`acc = int32(acc + int32(a) * int32(b))`; Numba would otherwise sum in int64, which LLVM
     vectorises as 64-bit multiplies). LLVM 22 on AVX-512 VNNI vectorises it into vpmovzxbd /
     vpmovsxbd + vpdpwssd, the int16-pair dot product, on 16 int32 lanes (each lane's high int16
     of the zero-extended x is 0, so the pair is one exact product): 16 multiply-adds per
     instruction; compiled for AVX2 alone (haswell), vpmaddwd (both checked in the tests). With
     both operands signed it used vpmulld (a 2-uop 32-bit multiply, ~40% slower measured) for
     any tile larger than 1 x 1.
  2. Register tile: 4 rows of x by 4 rows of W at once, 16 independent sums, each read along k
     from C-contiguous rows (W stays [out, in], no transposed copy).
  3. Cache blocking: the threads take 4-row tiles of x; OB rows of W (OB x K bytes, <= 1 MiB for
     K <= 4096) are shared by all row tiles before the next block, so W streams from L2.
  4. A last partial tile of W repeats its last row and stores only the valid columns.
  Not done: an AVX2 u8 x s8 path (vpmaddubsw + vpmaddwd). vpmaddubsw sums its pairs into
  saturating int16 (2 * 255 * 127 > 32767), so it needs x in 0..127 or 7-bit weights.

The block API, for kernels that fuse an int8 product with the work around it (kernels/attention.py:
the Q, K, V projection and the heads of one sequence; kernels/feed_forward.py: the feed-forward
sublayer). Host side:
  active_path()            the process's path, "amx", "vnni" or "portable" (fused kernels decline
                           "portable": they are built on the panels)
  padded_columns(k)        the columns of a quantized copy of x on that path (k rounded up)
  packed_weight(w)         (panels, row sums, start sums) of an int8 weight, packed once and kept
  stacked_weight(ws)       Int8Weights stacked along the output channels (the Q, K, V triple)
  is_int8_weight(w)        an Int8Weight or a StackedWeight
  quantize_into(x, q, s, qmax)   every row of x quantized (+128) into q, its scales into s, parallel
  run_product(xu, w, ...)        the product and epilogue on the process's path
  TILE_CONFIG              the AMX tile configuration the Numba functions below take
Inside a Numba kernel (one thread, a job of its own):
  quantize_row, dequantize_row   one row, inlined (the reference's operations, in its order)
  quantize_block, dequantize_block   rows of a job, compiled without fast math whatever the caller
  row_block_sums(...)      the int32 sums of FF_ROWS rows of x by every panel (AMX or VNNI)
"""
import contextlib
import ctypes
import mmap
import platform
import weakref

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported
from .vecmath import maxnum

MR = 4       # rows of x per tile
NR = 4       # rows of W per tile
OB = 256     # rows of W per cache block
QMAX = 127
OFFSET = 128   # x_q + 128: the unsigned operand (see the module docstring)
MAX_K = 66_000 # K * 255 * 127 < 2^31: the int32 sums cannot overflow


@njit(cache=True, inline="always")
def quantize_row(x, q, qmax):
    """q = rint(x / s) + 128 as uint8, with s = max|x| / 127 (0 for an all-zero row, whose q is
    128); returns s. qmax is 127 in x's dtype, so each step is the reference's float operation;
    the clamp and the offset are done on the integer rint gives (|x / s| <= 254 even when s is
    subnormal: no int32 overflow), which vectorises. The max is
    LLVM's maxnum (kernels/vecmath.py), which vectorises where `max` stays scalar; it differs
    from NumPy's max only for NaN, where the reference's result is undefined anyway (NaN cast
    to int8)."""
    amax = qmax - qmax                                        # 0 in x's dtype
    for k in range(x.shape[0]):
        amax = maxnum(amax, abs(x[k]))
    s = amax / qmax
    if s > 0:
        for k in range(x.shape[0]):
            v = np.int32(np.rint(x[k] / s))
            q[k] = np.uint8(np.int32(min(max(v, -QMAX), QMAX) + OFFSET))
    else:
        for k in range(x.shape[0]):
            q[k] = np.uint8(OFFSET)
    return s


@njit(cache=True, inline="always")
def _quantize_padded_row(x, n, q, s, qmax):
    """q[n], s[n] = row n of x quantized (+128) and its scale, the columns of q past x's (the k
    padding) 128; for n past x's rows (a padding row of q), q[n] = 128 (x_q = 0)."""
    K = x.shape[1]
    if n < x.shape[0]:
        s[n] = quantize_row(x[n], q[n, :K], qmax)
        for k in range(K, q.shape[1]):
            q[n, k] = np.uint8(OFFSET)
    else:
        for k in range(q.shape[1]):
            q[n, k] = np.uint8(OFFSET)


@njit_per_dtype([f"void({t}[:, ::1], uint8[:, ::1], {t}[::1], {t})" for t in FLOAT_TYPES],
                cache=True, parallel=True)
def quantize_into(x, q, s, qmax):
    """q[n], s[n] = quantized row n of x (+128) and its scale for every row of q (padding rows and
    columns 128: `_quantize_padded_row`)."""
    for n in prange(q.shape[0]):
        _quantize_padded_row(x, n, q, s, qmax)


@njit(cache=True, fastmath=False, error_model="numpy")
def quantize_block(x, q, s, qmax):
    """`quantize_into` on one thread, for a kernel's job (x (n, K) float, q (>= n, >= K) uint8).
    A function of its own with its flags set: Numba compiles a called function that leaves
    `fastmath` or `error_model` unset with its caller's (and caches that), so a caller compiled
    with fast-math flags would otherwise change it."""
    for n in range(q.shape[0]):
        _quantize_padded_row(x, n, q, s, qmax)


@njit(cache=True, inline="always")
def _dot_tile(x0, x1, x2, x3, w0, w1, w2, w3, acc):
    """acc[i, j] = sum_k x_i[k] w_j[k]: 4 x 4 int32 sums of uint8 x int8 rows of one length."""
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = np.int32(0)
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = np.int32(0)
    for k in range(x0.shape[0]):
        a0, a1, a2, a3 = np.int32(x0[k]), np.int32(x1[k]), np.int32(x2[k]), np.int32(x3[k])
        b0, b1, b2, b3 = np.int32(w0[k]), np.int32(w1[k]), np.int32(w2[k]), np.int32(w3[k])
        c00 = np.int32(c00 + a0 * b0); c01 = np.int32(c01 + a0 * b1)  # noqa: E702
        c02 = np.int32(c02 + a0 * b2); c03 = np.int32(c03 + a0 * b3)  # noqa: E702
        c10 = np.int32(c10 + a1 * b0); c11 = np.int32(c11 + a1 * b1)  # noqa: E702
        c12 = np.int32(c12 + a1 * b2); c13 = np.int32(c13 + a1 * b3)  # noqa: E702
        c20 = np.int32(c20 + a2 * b0); c21 = np.int32(c21 + a2 * b1)  # noqa: E702
        c22 = np.int32(c22 + a2 * b2); c23 = np.int32(c23 + a2 * b3)  # noqa: E702
        c30 = np.int32(c30 + a3 * b0); c31 = np.int32(c31 + a3 * b1)  # noqa: E702
        c32 = np.int32(c32 + a3 * b2); c33 = np.int32(c33 + a3 * b3)  # noqa: E702
    acc[0, 0], acc[0, 1], acc[0, 2], acc[0, 3] = c00, c01, c02, c03
    acc[1, 0], acc[1, 1], acc[1, 2], acc[1, 3] = c10, c11, c12, c13
    acc[2, 0], acc[2, 1], acc[2, 2], acc[2, 3] = c20, c21, c22, c23
    acc[3, 0], acc[3, 1], acc[3, 2], acc[3, 3] = c30, c31, c32, c33


def _product_loops(xu, wq, w_sums, n_rows, acc_out, y, s_x, s_w, bias):
    """Every 4 x 4 tile of x_q + 128 (uint8, N padded to a multiple of 4, K) by W_q (O, K) int8,
    less 128 * w_sums[o] = 128 * sum_k W_q[o, k]: the int8 product x_q W_q^T, exactly. With y of 0
    rows the int32 sums go to acc_out (N, O); otherwise y (N, O) = (acc * s_x) * s_w (+ bias),
    each product rounded to y's dtype as the reference rounds it (no fused multiply-add)."""
    O = wq.shape[0]
    dequantize = y.shape[0] > 0
    for ob in range(0, O, OB):
        o_end = min(O, ob + OB)
        last = o_end - 1                                      # a partial tile repeats this row
        for t in prange(xu.shape[0] // MR):
            n0 = t * MR
            mr = min(MR, n_rows - n0)
            acc = np.empty((MR, NR), dtype=np.int32)
            tile = np.empty((MR, NR), dtype=s_x.dtype)
            x0, x1, x2, x3 = xu[n0], xu[n0 + 1], xu[n0 + 2], xu[n0 + 3]
            for o0 in range(ob, o_end, NR):
                nr = min(NR, o_end - o0)
                _dot_tile(x0, x1, x2, x3, wq[o0], wq[min(o0 + 1, last)], wq[min(o0 + 2, last)],
                          wq[min(o0 + 3, last)], acc)
                for i in range(mr):
                    for j in range(nr):
                        acc[i, j] -= OFFSET * w_sums[o0 + j]  # (x_q + 128) W_q - 128 W_q
                if not dequantize:
                    for i in range(mr):
                        for j in range(nr):
                            acc_out[n0 + i, o0 + j] = acc[i, j]
                    continue
                for i in range(mr):
                    for j in range(nr):
                        tile[i, j] = acc[i, j]                # int32 -> float, as astype does
                    sx = s_x[n0 + i]
                    for j in range(nr):
                        v = tile[i, j] * sx
                        v = v * s_w[o0 + j]
                        if bias.shape[0] > 0:
                            v = v + bias[o0 + j]
                        y[n0 + i, o0 + j] = v


_product = njit_per_dtype(
    [f"void(uint8[:, ::1], int8[:, ::1], int32[::1], int64, int32[:, ::1], {t}[:, ::1], "
     f"{t}[::1], {t}[::1], {t}[::1])" for t in FLOAT_TYPES],
    cache=True, parallel=True)(_product_loops)



# ---- the AVX-512 VNNI path: vpdpbusd on packed weight panels ---------------------------------

VNNI_MR = 4             # rows of x per VNNI register tile
VNNI_NV = 4             # 16-lane int32 vectors per tile row
PANEL = 16 * VNNI_NV    # output channels per packed weight panel (and per tile): 64
VNNI_MC = 64            # rows of x per parallel job (a job: these rows x one panel)
VNNI_KC = 64            # 4-byte k-groups per block: a 64 x 256-byte slice of a panel, 16 KiB in L1


@intrinsic
def _vnni_tile(typingctx, x32, r0, w32, p, g0, g1, acc, i0, start, fresh):
    """acc[i0 + i, c] = a[i, c] + sum_{g0 <= g < g1} dot4(x32[r0 + i, g], w32[p, g, c]) for
    i < VNNI_MR, c < PANEL, where a is start[p, c] (the same for every row) when `fresh`, else
    acc[i0 + i, c] itself: the register tile of the VNNI path, written in LLVM IR.

    x32 (rows, K/4) int32 is the uint8 matrix x_q + 128 read 4 bytes at a time; w32 (panels, K/4,
    PANEL) int32 the packed weights, each int32 4 consecutive int8 W[o, 4g:4g+4] of one channel o.
    Per k-group: VNNI_NV vector loads of the panel (16 channels x 4 k each), and for each row one
    4-byte broadcast of x; then VNNI_MR x VNNI_NV `llvm.x86.avx512.vpdpbusd.512` (vpdpbusd: in each
    of 16 int32 lanes, 4 products u8 x s8 summed into the lane, exactly: 4 * 255 * 127 < 2^31).
    The accumulators are stack slots that LLVM promotes to 16 zmm registers for the whole loop."""
    intp = types.intp
    sig = types.none(x32, intp, w32, intp, intp, intp, acc, intp, start, types.boolean)

    def codegen(context, builder, signature, args):
        xty, _, wty, _, _, _, aty, _, sty, _ = signature.args
        x, r0, w, p, g0, g1, a, i0, st, fresh = args
        xa = context.make_array(xty)(context, builder, x)
        wa = context.make_array(wty)(context, builder, w)
        aa = context.make_array(aty)(context, builder, a)
        sa = context.make_array(sty)(context, builder, st)
        i32, n = ir.IntType(32), context.get_value_type(intp)
        vec, byte_vec = ir.VectorType(i32, 16), ir.VectorType(ir.IntType(8), 64)
        vpdpbusd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec, byte_vec, byte_vec]),
            "llvm.x86.avx512.vpdpbusd.512")

        def pointer(aryty, ary, *inds):
            return cgutils.get_item_pointer(context, builder, aryty, ary, list(inds))

        def vec_pointer(aryty, ary, *inds):
            return builder.bitcast(pointer(aryty, ary, *inds), vec.as_pointer())

        rows = [builder.add(i0, n(i)) for i in range(VNNI_MR)]
        acc_ptrs = [[vec_pointer(aty, aa, rows[i], n(16 * v)) for v in range(VNNI_NV)]
                    for i in range(VNNI_MR)]
        start_ptrs = [vec_pointer(sty, sa, p, n(16 * v)) for v in range(VNNI_NV)]
        slots = [[cgutils.alloca_once(builder, vec) for _ in range(VNNI_NV)]
                 for _ in range(VNNI_MR)]
        for i in range(VNNI_MR):
            for v in range(VNNI_NV):
                first = builder.select(fresh, start_ptrs[v], acc_ptrs[i][v])
                builder.store(builder.load(first, align=4), slots[i][v])
        x_rows = [builder.add(r0, n(i)) for i in range(VNNI_MR)]
        zeros = ir.Constant(ir.VectorType(i32, 16), None)          # the broadcast's mask
        with cgutils.for_range_slice(builder, g0, g1, n(1)) as (g, _):
            ws = [builder.bitcast(builder.load(vec_pointer(wty, wa, p, g, n(16 * v)), align=4),
                                  byte_vec) for v in range(VNNI_NV)]
            for i in range(VNNI_MR):
                x4 = builder.load(pointer(xty, xa, x_rows[i], g), align=4)
                xb = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vec, ir.Undefined), x4, i32(0)),
                    ir.Constant(vec, ir.Undefined), zeros)              # 4 bytes of x, 16 times
                xb = builder.bitcast(xb, byte_vec)
                for v in range(VNNI_NV):
                    builder.store(builder.call(vpdpbusd, [builder.load(slots[i][v]), xb, ws[v]]),
                                  slots[i][v])
        for i in range(VNNI_MR):
            for v in range(VNNI_NV):
                builder.store(builder.load(slots[i][v]), acc_ptrs[i][v], align=4)
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True, inline="always")
def _store_job(acc, r0, p, mc, n_rows, n_cols, acc_out, y, s_x, s_w, bias):
    """The epilogue of a job of the VNNI and AMX paths (mc rows from r0, panel p): its int32 sums
    acc[:nr, :nc] (the job's part of the valid n_rows x n_cols, rows r0.., channels o0 = 64 p..)
    go to acc_out when y has no rows, else y = (acc * s_x) * s_w (+ bias), each
    product rounded to y's dtype as the reference rounds it (no fused multiply-add). One row at a
    time, every loop 0-based over 1-D rows (see kernels/gelu.py, "Indexing": an index LLVM cannot
    prove >= 0 turns the loop into gathers and scatters)."""
    o0 = p * PANEL
    nr, nc = min(mc, n_rows - r0), min(PANEL, n_cols - o0)
    if y.shape[0] == 0:
        for i in range(nr):
            src, dst = acc[i], acc_out[r0 + i, o0:o0 + nc]
            for j in range(nc):
                dst[j] = src[j]
        return
    sw = s_w[o0:o0 + nc]
    b = bias[o0:o0 + nc] if bias.shape[0] > 0 else bias
    for i in range(nr):
        dequantize_row(acc[i], s_x[r0 + i], sw, b, y[r0 + i, o0:o0 + nc])


@njit(cache=True, inline="always")
def dequantize_row(src, sx, sw, b, dst):
    """dst = (src * sx) * sw + b for one row: src int32 (>= n), sw, b, dst (n,) (b empty: no
    bias), each product rounded to dst's dtype as the reference rounds it (compiled without
    fast math, no fused multiply-add)."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]                                       # int32 -> float, as astype does
    if b.shape[0] > 0:
        for j in range(dst.shape[0]):
            dst[j] = dst[j] * sx * sw[j] + b[j]               # ((acc * s_x) * s_w) + b
    else:
        for j in range(dst.shape[0]):
            dst[j] = dst[j] * sx * sw[j]


@njit(cache=True, fastmath=False, error_model="numpy")
def dequantize_block(acc, n, s_x, s_w, bias, out):
    """out[i] = (acc[i] * s_x[i]) * s_w + bias for i < n (`dequantize_row`) on one thread, for a
    kernel's job; its flags set as `quantize_block`'s, so that a caller compiled with fast-math
    flags (the attention's contraction) cannot fuse its multiply-adds."""
    for i in range(n):
        dequantize_row(acc[i], s_x[i], s_w, bias, out[i])


def _product_vnni_loops(x32, wp, start, n_rows, n_cols, acc_out, y, s_x, s_w, bias):
    """The product of `_product_loops` on the VNNI path: x32 (N padded to VNNI_MR, K/4) int32 is
    x_q + 128 as uint8 with k padded to a multiple of 4 (the padding multiplies zero weights);
    wp (panels, K/4, PANEL) the packed weights and start (panels, PANEL) = -128 sum_k W_q[o, k]
    (`packed_weight`); n_rows x n_cols the valid part.
    A job is VNNI_MC rows of x by one panel (64 channels): for each VNNI_KC-group block of k, the
    panel's slice stays in L1 while the job's 4-row tiles pass it. The first block starts its sums
    at `start`, which takes the offset's 128 W_q off while the sums run (int32 sums wrap modulo
    2^32, and the final one, x_q W_q^T, fits). Then the epilogue on the job's int32 block
    (`_store_job`)."""
    panels = wp.shape[0]
    row_blocks = (x32.shape[0] + VNNI_MC - 1) // VNNI_MC
    K4 = x32.shape[1]
    for job in prange(row_blocks * panels):
        r0, p = (job // panels) * VNNI_MC, job % panels
        mc = min(VNNI_MC, x32.shape[0] - r0)                  # a multiple of VNNI_MR
        acc = np.empty((VNNI_MC, PANEL), dtype=np.int32)
        for g0 in range(0, max(K4, 1), VNNI_KC):              # K4 = 0: the sums are `start`
            g1 = min(K4, g0 + VNNI_KC)
            for i0 in range(0, mc, VNNI_MR):
                _vnni_tile(x32, r0 + i0, wp, p, g0, g1, acc, i0, start, g0 == 0)
        _store_job(acc, r0, p, mc, n_rows, n_cols, acc_out, y, s_x, s_w, bias)


def _panel_signatures(x_type, extra=""):
    """The signatures of a panel product (VNNI, AMX) for each float dtype: x of `x_type`, then
    wp, start, n_rows, n_cols, acc_out, y, s_x, s_w, bias, and `extra` arguments."""
    return [f"void({x_type}[:, ::1], int32[:, :, ::1], int32[:, ::1], int64, int64, int32[:, ::1], "
            f"{t}[:, ::1], {t}[::1], {t}[::1], {t}[::1]{extra})" for t in FLOAT_TYPES]


_product_vnni = njit_per_dtype(_panel_signatures("int32"), cache=True,
                               parallel=True)(_product_vnni_loops)


# ---- the AMX path: tdpbusd on tiles of the same packed panels --------------------------------

AMX_MR = 32             # rows of x per AMX block: two A tiles of 16 rows
AMX_KB = 64             # bytes of k per tile step (16 k-groups)
AMX_MC = 64             # rows of x per parallel job (a job: these rows x one panel)
# the tile configuration (palette 1) ldtilecfg loads: tiles 0-7 all 16 rows x 64 bytes
TILE_CONFIG = np.zeros(64, np.uint8)
TILE_CONFIG[0] = 1
TILE_CONFIG[16:32].view(np.uint16)[:] = 64                 # bytes per row, tiles 0-7
TILE_CONFIG[48:56] = 16                                    # rows, tiles 0-7


def _void_function(builder, name, argument_types):
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), argument_types), name)


@intrinsic
def _amx_configure(typingctx, config):
    """ldtilecfg: this thread's tiles take the shapes in `config` (64 bytes, `TILE_CONFIG`)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte_pointer = ir.IntType(8).as_pointer()
        builder.call(_void_function(builder, "llvm.x86.ldtilecfg", [byte_pointer]),
                     [builder.bitcast(data, byte_pointer)])
        return context.get_dummy_value()
    return types.none(config), codegen


@intrinsic
def _amx_release(typingctx):
    """tilerelease: the tiles go back to their initial state (the OS then saves none of them)."""
    def codegen(context, builder, signature, args):
        builder.call(_void_function(builder, "llvm.x86.tilerelease", []), [])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def _amx_block(typingctx, x8, r0, w32, p, c0, steps, acc, i0, start):
    """acc[i0 + i, c0 + c] = start[p, c0 + c] + sum_{k < 64 steps} x8[r0 + i, k] W[64 p + c0 + c, k]
    for i < 32, c < 32: one block of the AMX path, written in LLVM IR.

    x8 (rows, K padded to 64) uint8 is x_q + 128; w32 (panels, K/4, PANEL) the packed weights of
    the VNNI path, whose rows g .. g + 15, 16 channels wide, are exactly the B operand tdpbusd
    takes (16 rows of 16 int32 lanes, each lane 4 consecutive k of one channel): a tile loads
    them with the panel's row stride (256 bytes). Tiles 0-3 hold the 2 x 2 int32 sums (16 rows x
    16 channels each), loaded from `start` with stride 0 (every row the same); per step of 64 k,
    tiles 4-5 take two 16-row slices of x, 6-7 two 16-channel slices of the panel, and four
    `llvm.x86.tdpbusd` (each 16 x 16 lanes x 64 products u8 x s8, exact, added to the int32 sums
    modulo 2^32) update the sums; they are stored into acc (rows of 64 int32, 256 bytes)."""
    intp = types.intp
    sig = types.none(x8, intp, w32, intp, intp, intp, acc, intp, start)

    def codegen(context, builder, signature, args):
        xty, _, wty, _, _, _, aty, _, sty = signature.args
        x, r0, w, p, c0, steps, a, i0, st = args
        xa = context.make_array(xty)(context, builder, x)
        wa = context.make_array(wty)(context, builder, w)
        aa = context.make_array(aty)(context, builder, a)
        sa = context.make_array(sty)(context, builder, st)
        i8, i64, n = ir.IntType(8), ir.IntType(64), context.get_value_type(intp)
        byte_pointer = i8.as_pointer()
        load = _void_function(builder, "llvm.x86.tileloadd64", [i8, byte_pointer, i64])
        store = _void_function(builder, "llvm.x86.tilestored64", [i8, byte_pointer, i64])
        tdpbusd = _void_function(builder, "llvm.x86.tdpbusd", [i8, i8, i8])

        def pointer(aryty, ary, *inds):
            return builder.bitcast(
                cgutils.get_item_pointer(context, builder, aryty, ary, list(inds)), byte_pointer)

        x_stride = cgutils.unpack_tuple(builder, xa.strides, 2)[0]
        w_stride = cgutils.unpack_tuple(builder, wa.strides, 3)[1]
        acc_stride = cgutils.unpack_tuple(builder, aa.strides, 2)[0]
        r1, c1, i1 = builder.add(r0, n(16)), builder.add(c0, n(16)), builder.add(i0, n(16))
        sums = [(i8(0), c0), (i8(1), c1), (i8(2), c0), (i8(3), c1)]   # (tile, channel) by row
        for tile, c in sums:
            builder.call(load, [tile, pointer(sty, sa, p, c), i64(0)])
        with cgutils.for_range(builder, steps) as loop:
            k = builder.mul(loop.index, n(AMX_KB))
            g = builder.mul(loop.index, n(AMX_KB // 4))
            builder.call(load, [i8(4), pointer(xty, xa, r0, k), x_stride])
            builder.call(load, [i8(5), pointer(xty, xa, r1, k), x_stride])
            builder.call(load, [i8(6), pointer(wty, wa, p, g, c0), w_stride])
            builder.call(load, [i8(7), pointer(wty, wa, p, g, c1), w_stride])
            for (tile, _), a_tile, b_tile in zip(sums, (4, 4, 5, 5), (6, 7, 6, 7)):
                builder.call(tdpbusd, [tile, i8(a_tile), i8(b_tile)])
        for (tile, c), row in zip(sums, (i0, i0, i1, i1)):
            builder.call(store, [tile, pointer(aty, aa, row, c), acc_stride])
        return context.get_dummy_value()
    return sig, codegen


def _product_amx_loops(x8, wp, start, n_rows, n_cols, acc_out, y, s_x, s_w, bias, config):
    """The product of `_product_vnni_loops` with AMX tiles: x8 (N padded to AMX_MR, K padded to
    AMX_KB) uint8 x_q + 128, wp and start as there (wp's k-groups cover x8's K). A job is AMX_MC
    rows of x by one panel: it configures the tiles, runs the 2 x 2 blocks of 32 rows x 32
    channels (`_amx_block`) into its int32 block, releases the tiles, then the epilogue
    (`_store_job`)."""
    panels = wp.shape[0]
    row_blocks = (x8.shape[0] + AMX_MC - 1) // AMX_MC
    steps = x8.shape[1] // AMX_KB
    for job in prange(row_blocks * panels):
        r0, p = (job // panels) * AMX_MC, job % panels
        mc = min(AMX_MC, x8.shape[0] - r0)                    # a multiple of AMX_MR
        acc = np.empty((AMX_MC, PANEL), dtype=np.int32)
        _amx_configure(config)
        for i0 in range(0, mc, AMX_MR):
            for c0 in range(0, PANEL, 32):
                _amx_block(x8, r0 + i0, wp, p, c0, steps, acc, i0, start)
        _amx_release()
        _store_job(acc, r0, p, mc, n_rows, n_cols, acc_out, y, s_x, s_w, bias)


_product_amx = njit_per_dtype(_panel_signatures("uint8", ", uint8[::1]"), cache=True,
                              parallel=True)(_product_amx_loops)


def _compiles_for(*flags) -> bool:
    """True if Numba compiles for a CPU with these features: its feature string (the host's, set in
    kernels/common.py, or the user's NUMBA_CPU_FEATURES) names each of them (+avx512vnni, ...)."""
    features = numba.config.CPU_FEATURES or llvmlite.binding.get_host_cpu_features().flatten()
    return all(f in features.split(",") for f in flags)


def _compiles_for_vnni() -> bool:
    return _compiles_for("+avx512vnni")


_amx_permission = None


def _amx_permitted() -> bool:
    """True if Numba compiles for AMX (amx-tile, amx-int8) and Linux lets this process use the
    tiles: their 8 KiB of register state must be requested once per process (arch_prctl
    ARCH_REQ_XCOMP_PERM for XTILEDATA, Linux 5.16+; ONNX Runtime and oneDNN make the same
    request). Asked at the first call that needs the answer, never on import."""
    global _amx_permission
    if _amx_permission is None:
        _amx_permission = False
        if _compiles_for("+amx-tile", "+amx-int8") and platform.machine() == "x86_64":
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                _amx_permission = libc.syscall(ctypes.c_long(158), ctypes.c_long(0x1023),
                                               ctypes.c_long(18)) == 0  # arch_prctl(REQ, 18)
            except (OSError, AttributeError):
                pass
    return _amx_permission


PATHS = ("amx", "vnni", "portable")
_path = None   # chosen once per process, at the first product (`active_path`)


def available_paths() -> tuple[str, ...]:
    """The product's paths this process can run: "portable" always, "vnni" with AVX-512 VNNI,
    "amx" with AMX-INT8 where the OS allows it."""
    return tuple(p for p, ok in zip(PATHS, (_amx_permitted, _compiles_for_vnni, lambda: True))
                 if ok())


def active_path() -> str:
    """The path of this process: the first of PATHS it can run (or the one `using_path` set)."""
    global _path
    if _path is None:
        _path = available_paths()[0]
    return _path


@contextlib.contextmanager
def using_path(name: str):
    """`with using_path("portable"):` runs the product on one path (for tests and benchmarks)."""
    global _path
    if name not in available_paths():
        raise ValueError(f"path {name!r} is not available here (available: {available_paths()})")
    before, _path = _path, name
    try:
        yield
    finally:
        _path = before


_packed = {}   # id(W_q) -> (W_q's shape and address, packed panels, row sums)


def _pack(w_q):
    """W_q (O, K) int8 -> (panels, K4, PANEL) int32, K4 = 16 ceil(K / 64): panel p, group g, lane c
    holds W_q[64 p + c, 4g:4g+4] (zero past O and K), each 64-byte row of a panel 16 channels x
    4 k, the layout vpdpbusd reads, and 16 rows of it the B tile tdpbusd reads (the VNNI path
    reads the first ceil(K / 4) groups). The buffer is an anonymous mapping of its own, page-
    aligned (so one cache line per vector): the panels live as long as their weight, and in the
    heap, which `tune_process` keeps from shrinking, the panels packed during a first forward
    would sit above that forward's transient arrays and keep the heap at its peak size."""
    O, K = w_q.shape
    K4, panels = (K + AMX_KB - 1) // AMX_KB * (AMX_KB // 4), (O + PANEL - 1) // PANEL
    padded = np.zeros((panels * PANEL, K4 * 4), np.int8)
    padded[:O, :K] = w_q
    raw = np.frombuffer(mmap.mmap(-1, padded.size), np.uint8)      # freed with the array
    out = raw.view(np.int8).reshape(panels, K4, PANEL, 4)
    out[...] = padded.reshape(panels, PANEL, K4, 4).transpose(0, 2, 1, 3)
    return out.view(np.int32).reshape(panels, K4, PANEL)


def _start_sums(sums):
    """(panels, PANEL) int32: -128 sums[o] at panel o // PANEL, lane o % PANEL (0 past O), where
    the VNNI and AMX paths' sums start (`_product_vnni_loops`)."""
    start = np.zeros(((sums.shape[0] + PANEL - 1) // PANEL) * PANEL, np.int32)
    start[:sums.shape[0]] = -OFFSET * sums
    return start.reshape(-1, PANEL)


def _packed_entry(w_q):
    """(packed panels, row sums, start sums) of W_q (O, K) int8."""
    sums = _row_sums(w_q)
    return _pack(w_q), sums, _start_sums(sums)


def packed_weight(w):
    """(packed panels, row sums, start sums) of an int8 weight: a StackedWeight's own, or those of
    W_q (an int8 array, or an Int8Weight's q) computed once per array and kept while it lives (a
    weight is not written after quantization; an in-place edit of W_q's values is not seen)."""
    if isinstance(w, StackedWeight):
        return w.packed
    w_q = getattr(w, "q", w)
    key = id(w_q)
    entry = _packed.get(key)
    if entry is None or entry[0] != (w_q.shape, w_q.ctypes.data):
        entry = ((w_q.shape, w_q.ctypes.data), *_packed_entry(w_q))
        if key not in _packed:
            weakref.finalize(w_q, _packed.pop, key, None)
        _packed[key] = entry
    return entry[1:]


def is_int8_weight(w) -> bool:
    return hasattr(w, "q") and hasattr(w, "scale")            # an Int8Weight (or StackedWeight)


class StackedWeight:
    """Int8 weights stacked along the output channels, read by int8_linear_forward like one
    Int8Weight (q, scale, shape, dtype): the fused Q, K, V projection (kernels/attention.py).
    Built for one path: on the portable path it holds the stacked W_q, on the AMX and VNNI paths
    only the stack's packed panels (`packed`, `q` None): the weights it stacks are kept by the
    model anyway, and a stacked copy beside the panels would be a third copy of each."""

    def __init__(self, weights, packed: bool):
        q = np.concatenate([w.q for w in weights])                # (sum O, K) int8
        self.scale = np.concatenate([w.scale for w in weights])   # (sum O,)
        self.shape, self.dtype = q.shape, q.dtype
        self.q, self.packed = (None, _packed_entry(q)) if packed else (q, None)


_stacked = {}  # (path, ids of the stacked W_q arrays) -> StackedWeight


def stacked_weight(weights):
    """The StackedWeight of `weights` (Int8Weights with equal K) for the process's path, built once
    and kept while all of their W_q live."""
    path = active_path()
    key = (path, *(id(w.q) for w in weights))
    entry = _stacked.get(key)
    if entry is None:
        entry = _stacked[key] = StackedWeight(weights, packed=path != "portable")
        for w in weights:
            weakref.finalize(w.q, _stacked.pop, key, None)
    return entry


def run_product(xu, w, n_rows, acc_out, y, s_x, s_w, bias):
    """The product on the process's path: xu (`padded_rows(N)`, `padded_columns(K)`) uint8
    x_q + 128, w an int8 array W_q (O, K), an Int8Weight or a StackedWeight."""
    dtype = y.dtype.name if y.shape[0] > 0 else "float32"
    path = active_path()
    if path == "portable":
        w_q = getattr(w, "q", w)
        _product.dispatcher(dtype)(xu, w_q, _row_sums(w_q), n_rows, acc_out, y, s_x, s_w, bias)
        return
    wp, _, start = packed_weight(w)
    if path == "amx":
        _product_amx.dispatcher(dtype)(xu, wp, start, n_rows, w.shape[0], acc_out, y, s_x, s_w,
                                       bias, TILE_CONFIG)
    else:
        _product_vnni.dispatcher(dtype)(xu.view(np.int32), wp, start, n_rows, w.shape[0],
                                        acc_out, y, s_x, s_w, bias)


def padded_columns(k):
    """The columns of the quantized copy of x: k, rounded up to a multiple of 4 on the VNNI path,
    of 64 on the AMX path."""
    step = {"amx": AMX_KB, "vnni": 4, "portable": 1}[active_path()]
    return (k + step - 1) // step * step


def padded_rows(n):
    """The rows of the quantized copy of x: n, rounded up to a multiple of the path's tile rows."""
    rows = {"amx": AMX_MR, "vnni": VNNI_MR, "portable": MR}[active_path()]
    return (n + rows - 1) // rows * rows


def _row_sums(w_q):
    return w_q.sum(axis=1, dtype=np.int32)                    # (O,), for the offset's correction


@register("quantize_rows")
def quantize_rows(x):
    """(x_q, s_x) like the reference, for float32/float64 x (N, K)."""
    if not supported(x) or x.ndim != 2:
        return NotImplemented
    x = np.ascontiguousarray(x)
    xu = np.empty(x.shape, np.uint8)
    s = np.empty(x.shape[0], x.dtype)
    quantize_into(x, xu, s, x.dtype.type(QMAX))
    return (xu ^ np.uint8(OFFSET)).view(np.int8), s           # x_q + 128 -> x_q (flip the top bit)


@register("int8_matmul")
def int8_matmul(x_q, w_q):
    """x_q (N, K) @ w_q^T (O, K) -> (N, O) int32, like the reference."""
    if (x_q.dtype != np.int8 or w_q.dtype != np.int8 or x_q.ndim != 2 or w_q.ndim != 2
            or x_q.shape[1] != w_q.shape[1] or x_q.shape[1] > MAX_K):
        return NotImplemented
    N, K = x_q.shape
    out = np.empty((N, w_q.shape[0]), np.int32)
    if out.size:
        xu = np.full((padded_rows(N), padded_columns(K)), OFFSET, np.uint8)
        xu[:N, :K] = x_q.view(np.uint8) ^ np.uint8(OFFSET)    # x_q + 128 (flip the top bit)
        none = np.zeros(0, np.float32)
        run_product(xu, np.ascontiguousarray(w_q), N, out, np.zeros((0, 0), np.float32), none,
                     none, none)
    return out


@register("int8_linear_forward")
def int8_linear_forward(x, w, b):
    """(y, (x, w)) like the reference: quantization, then product and epilogue, two parallel
    passes."""
    if (not supported(x, w.scale, b) or x.shape[-1] != w.shape[1] or w.shape[1] > MAX_K
            or (b is not None and b.shape != w.shape[:1])):
        return NotImplemented
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))     # (N, K)
    N = x2.shape[0]
    xu = np.empty((padded_rows(N), padded_columns(x2.shape[1])), np.uint8)   # x_q + 128
    s_x = np.empty(N, x2.dtype)
    y = np.empty((N, w.shape[0]), x2.dtype)
    if y.size:
        quantize_into(x2, xu, s_x, x2.dtype.type(QMAX))
        run_product(xu, w, N, np.empty((0, 0), np.int32), y, s_x, w.scale,
                     np.zeros(0, x2.dtype) if b is None else np.ascontiguousarray(b))
    return y.reshape(*x.shape[:-1], w.shape[0]), (x, w)


# ---- blocks of 32 rows by every panel (the fused kernels' jobs) ------------------------------

FF_ROWS = 32     # rows of x per job of the feed-forward's first product (one AMX block row)


@njit(cache=True, inline="always")
def row_block_sums(x8, x32, wp, start, r0, acc, amx, config):
    """acc (FF_ROWS, panels * PANEL) = the int32 sums x_q W_q^T of rows r0 .. r0 + FF_ROWS of x
    with every panel of the packed weights, on the AMX path (x8) or the VNNI path (x32, the same
    bytes read 4 at a time), each panel's block as those paths' jobs compute it."""
    for p in range(wp.shape[0]):
        block = acc[:, p * PANEL:(p + 1) * PANEL]
        if amx:
            _amx_configure(config)
            for c0 in range(0, PANEL, 32):
                _amx_block(x8, r0, wp, p, c0, x8.shape[1] // AMX_KB, block, 0, start)
            _amx_release()
        else:
            for g0 in range(0, max(x32.shape[1], 1), VNNI_KC):
                g1 = min(x32.shape[1], g0 + VNNI_KC)
                for i0 in range(0, FF_ROWS, VNNI_MR):
                    _vnni_tile(x32, r0 + i0, wp, p, g0, g1, block, i0, start, g0 == 0)


def compiled_asm(dtype="float32", path="portable"):
    """The assembly of the product's loops for `dtype` on `path`, compiled on one thread (the code
    of a parallel kernel's loop body is not in its dispatcher's assembly, nor in a cached one's)."""
    kernel, loops = {"portable": (_product, _product_loops),
                     "vnni": (_product_vnni, _product_vnni_loops),
                     "amx": (_product_amx, _product_amx_loops)}[path]
    serial = njit(kernel.signatures[dtype])(loops)
    return serial.inspect_asm(serial.signatures[0])
