"""exp and log for float64 written from arithmetic and bit casts, so LLVM can vectorize them.

numba without Intel SVML turns ``math.exp``/``math.log`` into scalar libm calls (~5 ns each),
which stops a loop over cells from using SIMD lanes. These versions use only multiply/add,
one division (log), comparisons/selects and integer bit operations, and are accurate to a few
ulp over the range the model needs (|x| < 700 for exp, positive normal x for log).
"""

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_ROUND_MAGIC = 6755399441055744.0  # 1.5 * 2**52: adding it rounds to an integer in the low bits
_TWO52 = 4503599627370496.0
_SQRT2 = 1.4142135623730951


@intrinsic
def _f64_as_i64(typingctx, x):
    """Reinterpret the bits of a float64 as int64."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def _i64_as_f64(typingctx, x):
    """Reinterpret the bits of an int64 as float64."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def vsqrt(typingctx, x):
    """Square root as the LLVM intrinsic (vectorizes; numba's math.sqrt is a libm call)."""
    sig = types.float64(types.float64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.sqrt", [ir.DoubleType()])
        return builder.call(fn, args)

    return sig, codegen


_MAGIC_BITS = 0x4338000000000000  # bits of _ROUND_MAGIC
_TWO52_BITS = 0x4330000000000000  # bits of 2**52


@numba.njit(inline="always", error_model="numpy")
def vexp(x):
    """e**x for float64, relative error < 3e-16 for -708 < x < 709 (clamped outside)."""
    x = min(max(x, -708.0), 709.0)
    t = x * _LOG2E + _ROUND_MAGIC
    n = t - _ROUND_MAGIC  # round(x / ln 2) as a float
    k = _f64_as_i64(t) - _MAGIC_BITS  # the same integer, from the low bits
    r = (x - n * _LN2_HI) - n * _LN2_LO  # |r| <= ln2 / 2
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # 2**k split in two factors so that k near +-1023 does not overflow the exponent field
    k1 = k >> 1
    s1 = _i64_as_f64((k1 + 1023) << 52)
    s2 = _i64_as_f64((k - k1 + 1023) << 52)
    return p * s1 * s2


@numba.njit(inline="always", error_model="numpy")
def _log_reduce(x):
    """x = m * 2**e with m in [sqrt(1/2), sqrt(2)): returns (m, e) as floats."""
    bits = _f64_as_i64(x)
    e_biased = (bits >> 52) & 0x7FF
    e = _i64_as_f64(e_biased | _TWO52_BITS) - _TWO52 - 1023.0
    m = _i64_as_f64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)  # in [1, 2)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    return m, e


@numba.njit(inline="always", error_model="numpy")
def _log_finish(s, e):
    """log(m * 2**e) from s = (m - 1) / (m + 1) (atanh series, |s| <= 0.1716)."""
    z = s * s
    p = 1.0 / 21.0
    p = p * z + 1.0 / 19.0
    p = p * z + 1.0 / 17.0
    p = p * z + 1.0 / 15.0
    p = p * z + 1.0 / 13.0
    p = p * z + 1.0 / 11.0
    p = p * z + 1.0 / 9.0
    p = p * z + 1.0 / 7.0
    p = p * z + 1.0 / 5.0
    p = p * z + 1.0 / 3.0
    p = p * z + 1.0
    return 2.0 * s * p + e * _LN2_LO + e * _LN2_HI


@numba.njit(inline="always", error_model="numpy")
def vlog3(a, b, c):
    """(log a, log b, log c) sharing one division (divisions dominate a SIMD step)."""
    ma, ea = _log_reduce(a)
    mb, eb = _log_reduce(b)
    mc, ec = _log_reduce(c)
    pa, pb, pc = ma + 1.0, mb + 1.0, mc + 1.0
    r = 1.0 / (pa * pb * pc)
    return (_log_finish((ma - 1.0) * pb * pc * r, ea),
            _log_finish((mb - 1.0) * pa * pc * r, eb),
            _log_finish((mc - 1.0) * pa * pb * r, ec))


@numba.njit(inline="always", error_model="numpy")
def vlog(x):
    """Natural log for positive normal float64, relative error < 3e-16 (NaN or -inf otherwise
    is not guaranteed: callers keep x positive)."""
    m, e = _log_reduce(x)
    return _log_finish((m - 1.0) / (m + 1.0), e)
