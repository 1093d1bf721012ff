"""Engine builders for layers with two inputs: hls4ml's element-wise merges, Concatenate and Dot (nnet_merge.h).

Each merge computes its op on the full-precision ap_fixed result of its two inputs, then assigns it to the
result type; Concatenate assigns each input to the result type; Dot converts each product to its accumulator,
sums there, then assigns to the result type. The builders follow engine.py's contract: `(fn, work, (lo, hi))`.
"""

from __future__ import annotations

import numpy as np

from .errors import EmulationError
from .fixedpoint import FixedFormat

# Above this magnitude an exact intermediate could wrap in int64 (RND adds half an LSB, shifts align fractions):
# those merges evaluate on Python integers instead.
INT64_SAFE = 1 << 62

MERGE_FUNCTIONS = ("add", "subtract", "multiply", "average", "maximum", "minimum")


def _converter(from_frac: int, fmt: FixedFormat, lo: int, hi: int):
    """An ap_fixed assignment to `fmt` of exact values in [lo, hi] with `from_frac` fraction bits: engine.py's
    fast `_Convert` when the values fit int64 comfortably, else one on Python integers."""
    from .engine_ops import _Convert

    if max(abs(lo), abs(hi)) < INT64_SAFE:
        conv = _Convert(from_frac, fmt, lo, hi)
        return conv, conv.bounds
    big = _BigConvert(from_frac, fmt)
    return big, big.bounds(lo, hi)


class _BigConvert:
    """The same assignment on object arrays of Python integers (values wider than int64); int64 out."""

    def __init__(self, from_frac: int, fmt: FixedFormat):
        if fmt.width > 63:
            raise EmulationError(f"result format {fmt} is wider than the engine's 63-bit values")
        self.fmt, self.shift = fmt, from_frac - fmt.frac

    def bounds(self, lo: int, hi: int) -> tuple[int, int]:
        out = self._convert(np.array([lo, hi], dtype=object))
        f = self.fmt
        if f.saturation in ("SAT", "SAT_SYM"):
            return int(out[0]), int(out[1])
        return f.raw_min, f.raw_max  # wrapped or zeroed values can land anywhere

    def __call__(self, v: np.ndarray) -> np.ndarray:
        return self._convert(v).astype(np.int64)

    def _convert(self, v: np.ndarray) -> np.ndarray:
        f, sh = self.fmt, self.shift
        if sh <= 0:
            r = v * (1 << -sh)
        else:
            floor = v >> sh
            rem = v - floor * (1 << sh)
            half = 1 << (sh - 1)
            mode = f.rounding
            if mode == "TRN":
                up = np.zeros(v.shape, dtype=bool)
            elif mode == "TRN_ZERO":
                up = (v < 0) & (rem != 0)
            elif mode == "RND":
                up = rem >= half
            elif mode == "RND_CONV":
                up = (rem > half) | ((rem == half) & ((floor & 1) == 1))
            elif mode == "RND_INF":
                up = (rem > half) | ((rem == half) & (v >= 0))
            elif mode == "RND_MIN_INF":
                up = rem > half
            elif mode == "RND_ZERO":
                up = (rem > half) | ((rem == half) & (v < 0))
            else:
                raise EmulationError(f"rounding mode {mode!r} is not supported")
            r = floor + up.astype(object)
        lo, hi = f.raw_min, f.raw_max
        if f.saturation == "SAT":
            return np.where(r < lo, lo, np.where(r > hi, hi, r))
        if f.saturation == "SAT_SYM":
            low = -hi if f.signed else 0
            return np.where(r < low, low, np.where(r > hi, hi, r))
        if f.saturation == "SAT_ZERO":
            return np.where((r < lo) | (r > hi), 0, r)
        return ((r - lo) & ((1 << f.width) - 1)) + lo


def _operand(x: np.ndarray, n_elem: int, n: int, shift: int, big: bool) -> np.ndarray:
    """An input flattened per sample, repeated as hls4ml indexes it (`data[ii % n_elem]`), on the common grid."""
    flat = x.reshape(len(x), n_elem)
    if n_elem != n:
        flat = flat[:, np.arange(n) % n_elem]
    if big:
        flat = flat.astype(object)
    return flat << shift if shift else flat


def merge(layer, p, ins, fmt, arrays):
    """Add, Subtract, Multiply, Average, Maximum, Minimum (hls4ml `Merge`)."""
    fn_name = p["function"]
    if fn_name not in MERGE_FUNCTIONS:
        raise EmulationError(f"engine layer {layer['name']!r}: merge function {fn_name!r} is not supported "
                             f"(supported: {', '.join(MERGE_FUNCTIONS)})")
    if len(ins) != 2:
        raise EmulationError(f"engine layer {layer['name']!r}: a merge takes two inputs, not {len(ins)}")
    a, b = ins
    n1, n2 = int(p["n_elem1"]), int(p["n_elem2"])
    n = max(n1, n2)
    out_shape = tuple(int(s) for s in layer["shape"])
    fa, fb = a.format.frac, b.format.frac
    if fn_name == "multiply":
        sa = sb = 0
        frac = fa + fb
        corners = [x * y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
        lo, hi = min(corners), max(corners)
    else:
        f = max(fa, fb)
        sa, sb = f - fa, f - fb
        alo, ahi, blo, bhi = a.lo << sa, a.hi << sa, b.lo << sb, b.hi << sb
        frac = f + 1 if fn_name == "average" else f  # (a + b) * ap_ufixed<1,0>(0.5): one more fraction bit
        if fn_name in ("add", "average"):
            lo, hi = alo + blo, ahi + bhi
        elif fn_name == "subtract":
            lo, hi = alo - bhi, ahi - blo
        elif fn_name == "maximum":
            lo, hi = max(alo, blo), max(ahi, bhi)
        else:
            lo, hi = min(alo, blo), min(ahi, bhi)
    # every operand, aligned, must fit too
    peak = max(abs(v) for v in (lo, hi, a.lo << sa, a.hi << sa, b.lo << sb, b.hi << sb))
    big = peak >= INT64_SAFE
    if big:
        conv = _BigConvert(frac, fmt)
        bounds = conv.bounds(lo, hi)
    else:
        conv, bounds = _converter(frac, fmt, lo, hi)

    def fn(xs):
        x, y = _operand(xs[0], n1, n, sa, big), _operand(xs[1], n2, n, sb, big)
        if fn_name in ("add", "average"):
            v = x + y
        elif fn_name == "subtract":
            v = x - y
        elif fn_name == "multiply":
            v = x * y
        elif fn_name == "maximum":
            v = np.where(x > y, x, y)  # ties take the second input: the same value either way
        else:
            v = np.where(x < y, x, y)
        return conv(v).reshape((len(v),) + out_shape)

    return fn, 3 * n, bounds


def concatenate(layer, p, ins, fmt, arrays):
    """hls4ml `Concatenate`: each input assigned to the result type, joined along `axis` (of the per-sample
    shape)."""
    from .engine_ops import _Convert

    if len(ins) != 2:
        raise EmulationError(f"engine layer {layer['name']!r}: concatenate takes two inputs, not {len(ins)}")
    axis = int(p["axis"])
    convs = [_Convert(x.format.frac, fmt, x.lo, x.hi) for x in ins]
    shapes = [tuple(x.shape) for x in ins]
    out_shape = tuple(int(s) for s in layer["shape"])
    for s in shapes:
        if len(s) != len(out_shape) or not 0 <= axis < len(s):
            raise EmulationError(f"engine layer {layer['name']!r}: cannot join inputs of shapes {shapes} "
                                 f"along axis {axis} into {out_shape}")
    lo, hi = min(c.lo for c in convs), max(c.hi for c in convs)

    def fn(xs):
        parts = [c(x.reshape((len(x),) + s)) for c, x, s in zip(convs, xs, shapes)]
        return np.concatenate(parts, axis=axis + 1).reshape((len(xs[0]),) + out_shape)

    return fn, 0, (lo, hi)


def dot(layer, p, ins, fmt, arrays):
    """hls4ml `Dot` of two vectors (dot1d): each product converted to `accum`, summed in `accum` from 0 in index
    order, the sum assigned to the result type."""
    from .engine_ops import _Convert

    if len(ins) != 2:
        raise EmulationError(f"engine layer {layer['name']!r}: dot takes two inputs, not {len(ins)}")
    a, b = ins
    n_in = int(p["n_in"])
    accum = FixedFormat.from_dict(p["accum"])
    fp = a.format.frac + b.format.frac
    corners = [x * y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
    big = max(abs(c) for c in corners) >= INT64_SAFE
    if big:
        to_accum = _BigConvert(fp, accum)
        plo, phi = to_accum.bounds(min(corners), max(corners))
    else:
        to_accum, (plo, phi) = _converter(fp, accum, min(corners), max(corners))
    wrap = accum.saturation == "WRAP"
    # With WRAP every partial sum is taken modulo 2**width, so one sum and one wrap give the same value; the
    # sum is exact when the products' bounds prove it cannot leave the accumulator.
    s_lo, s_hi = min(0, plo * n_in), max(0, phi * n_in)
    fits = accum.raw_min <= s_lo and s_hi <= accum.raw_max
    acc_lo, acc_hi = (s_lo, s_hi) if fits else (accum.raw_min, accum.raw_max)
    to_result = _Convert(accum.frac, fmt, acc_lo, acc_hi)

    def fn(xs):
        x = xs[0].reshape(len(xs[0]), n_in)
        y = xs[1].reshape(len(xs[1]), n_in)
        if big:
            x, y = x.astype(object), y.astype(object)
        prods = to_accum(x * y)
        if fits or wrap:
            acc = prods.sum(axis=1)
            if not fits:
                acc = accum.overflow(acc)
        else:
            acc = np.zeros(len(x), dtype=np.int64)
            for i in range(n_in):
                acc = accum.overflow(acc + prods[:, i])
        return to_result(acc).reshape(len(x), 1)

    return fn, 2 * n_in, to_result.bounds


def clone(layer, p, ins, fmt, arrays):
    """io_stream's copy of a stream read by several layers: the values unchanged (same type)."""
    from .engine_ops import _Convert

    conv = _Convert(ins[0].format.frac, fmt, ins[0].lo, ins[0].hi)
    return (lambda xs: conv(xs[0])), 0, conv.bounds
