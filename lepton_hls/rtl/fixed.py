"""ap_fixed assignment semantics on da4ml's symbolic fixed-point variables.

An `ap_fixed` assignment rounds first (the quantization mode) and then handles overflow (the saturation mode).
da4ml's own `quantize` knows TRN and RND, WRAP, SAT and SAT_SYM; AP_RND_CONV (round half to even, which
hls4ml uses for QKeras quantizers) is built here from truncations and one parity bit, so the emitted logic
rounds exactly as the C simulation does.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
from da4ml.trace import FixedVariable, FixedVariableArray
from lepton_host.fixedpoint import FixedFormat

from ..compat.da4ml import variables
from .errors import RtlCoverageError

ROUNDINGS = ("TRN", "RND", "RND_CONV", "RND_MIN_INF")
SATURATIONS = ("WRAP", "SAT", "SAT_SYM")


def kif(fmt: FixedFormat) -> tuple[int, int, int]:
    """da4ml's (sign bit, integer bits without sign, fraction bits) of an ap_fixed format."""
    k = int(fmt.signed)
    return k, fmt.integer - k, fmt.frac


def check_format(fmt: FixedFormat, where: str) -> None:
    if fmt.rounding not in ROUNDINGS:
        raise RtlCoverageError(
            f"{where}: rounding mode AP_{fmt.rounding} of {fmt} has no exact RTL form here "
            f"(supported: {', '.join('AP_' + r for r in ROUNDINGS)}); change the layer's precision"
        )
    if fmt.saturation not in SATURATIONS:
        raise RtlCoverageError(
            f"{where}: overflow mode AP_{fmt.saturation} of {fmt} has no exact RTL form here "
            f"(supported: {', '.join('AP_' + s for s in SATURATIONS)}); change the layer's precision"
        )


def cast_const(value: float, fmt: FixedFormat) -> float:
    """A compile-time constant assigned to `fmt` (exact in float64 for widths up to 52 bits)."""
    return float(fmt.cast(np.float64(value)))


def _floor_to(v: FixedVariable, f: int) -> FixedVariable:
    """floor(v) on the grid 2**-f, without any overflow handling."""
    _k, _i, _f = v.kif
    if _f <= f:
        return v
    return v.quantize(1, int(_i) + 2, f, "WRAP", "TRN")


def round_var(v: FixedVariable, f: int, mode: str) -> FixedVariable:
    """Round `v` onto the grid 2**-f with ap_fixed quantization `mode`, keeping its full range."""
    if v.low == v.high:
        return v
    _k, _i, _f = v.kif
    if _f <= f:
        return v
    half = Decimal(2) ** (-f - 1)
    ulp = Decimal(2) ** (-_f)
    if mode == "TRN":
        return _floor_to(v, f)
    if mode == "RND":  # half up
        return _floor_to(v + half, f)
    if mode == "RND_MIN_INF":  # half down: a tie must not reach the next step
        return _floor_to(v + (half - ulp), f)
    if mode == "RND_CONV":
        # Half to even: add one ulp to the biased sum only when the kept LSB is odd, so a tie rounds up
        # from odd and stays down from even; anything past the tie rounds up either way.
        kept = _floor_to(v, f)
        parity = kept - _floor_to(v, f - 1)  # 0 or 2**-f
        return _floor_to(v + (half - ulp) + parity * (ulp * 2**f), f)
    raise RtlCoverageError(f"rounding mode AP_{mode} has no exact RTL form here")


def cast_var(v: FixedVariable, fmt: FixedFormat) -> FixedVariable:
    """`fmt v2 = v;` for one symbolic value."""
    if v.low == v.high:
        return FixedVariable.from_const(Decimal(repr(cast_const(float(v.low), fmt))), hwconf=v.hwconf)
    k, i, f = kif(fmt)
    r = round_var(v, f, fmt.rounding)
    return r.quantize(k, i, f, fmt.saturation, "TRN")


def cast(x: FixedVariableArray, fmt: FixedFormat, where: str = "") -> FixedVariableArray:
    """`fmt y[] = x[];` element-wise."""
    check_format(fmt, where or str(fmt))
    xs = variables(x)
    flat = [cast_var(v, fmt) for v in xs.ravel()]
    return FixedVariableArray(np.array(flat, dtype=object).reshape(xs.shape), x.solver_options)


def declare_input(x: FixedVariableArray, fmt: FixedFormat) -> FixedVariableArray:
    """Give the free input variables the input port's format."""
    k, i, f = kif(fmt)
    return x.quantize(k, i, f)
