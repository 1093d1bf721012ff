"""Arbitrary-precision fixed-point formats with the exact semantics of Xilinx ap_fixed / ap_ufixed.

Values are carried as raw two's-complement integers in int64 ("raw" = value * 2**frac). Every conversion
applies the format's quantization (rounding) and overflow (saturation) mode the way ap_fixed does, so the
host packer, the fast emulator and the RTL tracer agree with the C simulation bit for bit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import FormatError

ROUNDING_MODES = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV")
SATURATION_MODES = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")
MAX_WIDTH = 62  # raw values must stay exact in int64 with headroom for one shift

_TYPE_RE = re.compile(
    r"^\s*(?:ap_)?(?P<kind>u?fixed|u?int)\s*<\s*(?P<args>[^>]*)>\s*$",
)


@dataclass(frozen=True)
class FixedFormat:
    """A fixed-point number format: `width` bits in all, `integer` of them left of the binary point
    (sign bit included when `signed`)."""

    width: int
    integer: int
    signed: bool = True
    rounding: str = "TRN"
    saturation: str = "WRAP"

    def __post_init__(self) -> None:
        if not 1 <= self.width <= MAX_WIDTH:
            raise FormatError(f"fixed-point width {self.width} outside 1..{MAX_WIDTH}")
        if self.rounding not in ROUNDING_MODES:
            raise FormatError(f"unknown rounding mode {self.rounding!r}; expected one of {', '.join(ROUNDING_MODES)}")
        if self.saturation not in SATURATION_MODES:
            raise FormatError(
                f"unknown saturation mode {self.saturation!r}; expected one of {', '.join(SATURATION_MODES)}"
            )

    # ---- parsing and printing -------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> FixedFormat:
        """Parse `ap_fixed<16,6,AP_RND_CONV,AP_SAT>`, hls4ml's `fixed<16,6,TRN,WRAP,0>`, `ap_uint<8>`, ..."""
        m = _TYPE_RE.match(str(text))
        if not m:
            raise FormatError(f"cannot read fixed-point type {text!r}; expected e.g. ap_fixed<16,6> or ap_ufixed<8,0>")
        kind = m.group("kind")
        args = [a.strip() for a in m.group("args").split(",") if a.strip()]
        signed = not kind.startswith("u")
        try:
            if kind.endswith("int"):
                if len(args) != 1:
                    raise ValueError
                width = int(args[0])
                return cls(width=width, integer=width, signed=signed)
            width, integer = int(args[0]), int(args[1])
        except (ValueError, IndexError):
            raise FormatError(f"cannot read fixed-point type {text!r}: width and integer bits must be integers") from None
        rounding = _strip_ap(args[2]) if len(args) > 2 else "TRN"
        saturation = _strip_ap(args[3]) if len(args) > 3 else "WRAP"
        if len(args) > 4 and int(args[4]) != 0:
            raise FormatError(f"{text!r}: saturation bits other than 0 are not supported")
        return cls(width=width, integer=integer, signed=signed, rounding=rounding, saturation=saturation)

    def __str__(self) -> str:
        base = "ap_fixed" if self.signed else "ap_ufixed"
        if self.rounding == "TRN" and self.saturation == "WRAP":
            return f"{base}<{self.width},{self.integer}>"
        return f"{base}<{self.width},{self.integer},AP_{self.rounding},AP_{self.saturation}>"

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "integer": self.integer,
            "signed": self.signed,
            "rounding": self.rounding,
            "saturation": self.saturation,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FixedFormat:
        try:
            return cls(
                width=int(d["width"]),
                integer=int(d["integer"]),
                signed=bool(d["signed"]),
                rounding=str(d.get("rounding", "TRN")),
                saturation=str(d.get("saturation", "WRAP")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"malformed fixed-point format {d!r}: {e}") from None

    # ---- range ----------------------------------------------------------------------------------------
    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def raw_min(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def raw_max(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def step(self) -> float:
        return 2.0 ** -self.frac

    @property
    def min_value(self) -> float:
        return self.raw_min * self.step

    @property
    def max_value(self) -> float:
        return self.raw_max * self.step

    # ---- conversions ----------------------------------------------------------------------------------
    def quantize(self, x) -> np.ndarray:
        """Real values -> raw integers (int64), as `ap_fixed<...> v = (double)x` does."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise FormatError(f"cannot represent NaN or Inf in {self}")
        scaled = np.ldexp(x, self.frac)  # exact: multiplies by a power of two
        raw = _round_real(scaled, self.rounding)
        return self.overflow(raw)

    def requantize(self, raw, from_frac: int) -> np.ndarray:
        """Raw integers with `from_frac` fraction bits -> this format, exactly as an ap_fixed assignment."""
        raw = np.asarray(raw, dtype=np.int64)
        shift = from_frac - self.frac
        if shift <= 0:
            return self.overflow(raw << (-shift))
        return self.overflow(_round_shift(raw, shift, self.rounding))

    def overflow(self, raw) -> np.ndarray:
        """Apply the overflow mode to raw integers already on this format's grid."""
        raw = np.asarray(raw, dtype=np.int64)
        lo, hi = self.raw_min, self.raw_max
        mode = self.saturation
        if mode == "SAT":
            return np.clip(raw, lo, hi)
        if mode == "SAT_SYM":
            return np.clip(raw, -hi if self.signed else 0, hi)
        if mode == "SAT_ZERO":
            return np.where((raw < lo) | (raw > hi), 0, raw)
        span = np.int64(1) << np.int64(self.width)
        return ((raw - lo) & (span - 1)) + lo

    def to_float(self, raw) -> np.ndarray:
        return np.ldexp(np.asarray(raw, dtype=np.float64), -self.frac)

    def cast(self, x) -> np.ndarray:
        """Real values -> the nearest representable real values (quantize, then back to float64)."""
        return self.to_float(self.quantize(x))

    def representable(self, x) -> np.ndarray:
        """True where the real value lies inside the format's range (it would not saturate or wrap)."""
        x = np.asarray(x, dtype=np.float64)
        return (x >= self.min_value) & (x <= self.max_value)


def _strip_ap(mode: str) -> str:
    mode = mode.strip().upper()
    return mode[3:] if mode.startswith("AP_") else mode


def _round_real(scaled: np.ndarray, mode: str) -> np.ndarray:
    if mode == "TRN":
        r = np.floor(scaled)
    elif mode == "TRN_ZERO":
        r = np.trunc(scaled)
    elif mode == "RND":
        r = np.floor(scaled + 0.5)
    elif mode == "RND_CONV":
        r = np.rint(scaled)
    elif mode == "RND_INF":
        r = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    elif mode == "RND_MIN_INF":
        r = np.ceil(scaled - 0.5)
    elif mode == "RND_ZERO":
        r = np.sign(scaled) * np.ceil(np.abs(scaled) - 0.5)
    else:  # pragma: no cover - guarded by FixedFormat.__post_init__
        raise FormatError(f"unknown rounding mode {mode}")
    # Values beyond int64 saturate here; the overflow mode then decides what the hardware would hold.
    return np.clip(r, -(2.0**62), 2.0**62).astype(np.int64)


def _round_shift(raw: np.ndarray, shift: int, mode: str) -> np.ndarray:
    """Drop `shift` fraction bits from raw integers with ap_fixed's quantization mode."""
    floor = raw >> shift
    rem = raw & ((np.int64(1) << shift) - 1)
    half = np.int64(1) << (shift - 1)
    if mode == "TRN":
        return floor
    if mode == "TRN_ZERO":
        return floor + ((raw < 0) & (rem != 0))
    if mode == "RND":
        return floor + (rem >= half)
    if mode == "RND_CONV":
        return floor + ((rem > half) | ((rem == half) & ((floor & 1) == 1)))
    if mode == "RND_INF":
        return floor + ((rem > half) | ((rem == half) & (raw >= 0)))
    if mode == "RND_MIN_INF":
        return floor + (rem > half)
    if mode == "RND_ZERO":
        return floor + ((rem > half) | ((rem == half) & (raw < 0)))
    raise FormatError(f"unknown rounding mode {mode}")  # pragma: no cover
