"""exp, log and sqrt for float32 from arithmetic and bit casts (the float32 twin of vecmath).

The float32 kernels (see cardiotwin.precision) call these under the same names as vecmath's:
every operation here is float32 (typed constants: numba promotes float32 * a float literal to
float64), so LLVM vectorizes them at twice the float64 width. Accuracy: exp within 2 ulp for
-87 < x < 88 (clamped outside, so it never returns inf or a denormal), log within 2 ulp for
positive normal x.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_F = np.float32
_LOG2E = _F(1.4426950408889634)
_LN2_HI = _F(0.693145751953125)  # ln 2 split: the high part has 12 significant bits, so
_LN2_LO = _F(1.428606765330187e-06)  # n * _LN2_HI is exact for |n| < 2**11
_ROUND_MAGIC = _F(12582912.0)  # 1.5 * 2**23: adding it rounds to an integer in the low bits
_MAGIC_BITS = 0x4B400000  # bits of _ROUND_MAGIC
_SQRT2 = _F(1.4142135623730951)
_EXP_LO, _EXP_HI = _F(-87.0), _F(88.0)
_ONE, _HALF, _TWO = _F(1.0), _F(0.5), _F(2.0)
_EXP_C = tuple(_F(1.0 / np.prod(np.arange(1, k + 1))) for k in range(8))  # 1/k!
_LOG_C = tuple(_F(1.0 / k) for k in (1, 3, 5, 7, 9))


@intrinsic
def _f32_as_i32(typingctx, x):
    """Reinterpret the bits of a float32 as int32."""
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def _i32_as_f32(typingctx, x):
    """Reinterpret the bits of an int32 as float32."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def vsqrt(typingctx, x):
    """Square root of a float32 as the LLVM intrinsic (vectorizes)."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.sqrt", [ir.FloatType()])
        return builder.call(fn, args)

    return sig, codegen


@numba.njit(inline="always", error_model="numpy")
def vexp(x):
    """e**x for float32 (relative error < 2.5e-7 for -87 < x < 88; clamped outside)."""
    x = min(max(x, _EXP_LO), _EXP_HI)
    t = x * _LOG2E + _ROUND_MAGIC
    n = t - _ROUND_MAGIC  # round(x / ln 2) as a float
    k = _f32_as_i32(t) - numba.int32(_MAGIC_BITS)
    r = (x - n * _LN2_HI) - n * _LN2_LO  # |r| <= ln2 / 2
    p = _EXP_C[7]
    p = p * r + _EXP_C[6]
    p = p * r + _EXP_C[5]
    p = p * r + _EXP_C[4]
    p = p * r + _EXP_C[3]
    p = p * r + _EXP_C[2]
    p = p * r + _EXP_C[1]
    p = p * r + _EXP_C[0]
    # 2**k split in two factors: k reaches 127 at x = 88
    k1 = k >> numba.int32(1)
    s1 = _i32_as_f32((k1 + numba.int32(127)) << numba.int32(23))
    s2 = _i32_as_f32((k - k1 + numba.int32(127)) << numba.int32(23))
    return p * s1 * s2


@numba.njit(inline="always", error_model="numpy")
def _log_reduce(x):
    """x = m * 2**e with m in [sqrt(1/2), sqrt(2)): returns (m, e) as float32."""
    bits = _f32_as_i32(x)
    e = _F((bits >> numba.int32(23)) & numba.int32(0xFF)) - _F(127.0)
    m = _i32_as_f32((bits & numba.int32(0x007FFFFF)) | numba.int32(0x3F800000))  # in [1, 2)
    big = m > _SQRT2
    m = m * _HALF if big else m
    e = e + _ONE if big else e
    return m, e


@numba.njit(inline="always", error_model="numpy")
def _log_finish(s, e):
    """log(m * 2**e) from s = (m - 1) / (m + 1) (atanh series, |s| <= 0.1716)."""
    z = s * s
    p = _LOG_C[4]
    p = p * z + _LOG_C[3]
    p = p * z + _LOG_C[2]
    p = p * z + _LOG_C[1]
    p = p * z + _LOG_C[0]
    return _TWO * s * p + e * _LN2_LO + e * _LN2_HI


@numba.njit(inline="always", error_model="numpy")
def vlog3(a, b, c):
    """(log a, log b, log c) of float32s sharing one division."""
    ma, ea = _log_reduce(a)
    mb, eb = _log_reduce(b)
    mc, ec = _log_reduce(c)
    pa, pb, pc = ma + _ONE, mb + _ONE, mc + _ONE
    r = _ONE / (pa * pb * pc)
    return (_log_finish((ma - _ONE) * pb * pc * r, ea),
            _log_finish((mb - _ONE) * pa * pc * r, eb),
            _log_finish((mc - _ONE) * pa * pb * r, ec))


@numba.njit(inline="always", error_model="numpy")
def vlog(x):
    """Natural log of a positive normal float32."""
    m, e = _log_reduce(x)
    return _log_finish((m - _ONE) / (m + _ONE), e)
