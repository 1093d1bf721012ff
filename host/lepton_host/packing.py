"""Raw fixed-point values <-> 32-bit AXI4-Stream words, as `docs/package-layout.md` ("Numbers on the wire")
defines them.

A value of a `w`-bit format travels in a lane of L = 8, 16 or 32 bits (the smallest that holds `w`),
sign-extended (signed formats) or zero-extended (unsigned); lanes are packed little-endian, sample-major, with
no gap between samples, and the last word is zero-padded. An output packet ends with one check word: the
CRC-32 of its data words (`check_word`). Everything here is one or two numpy passes (`astype`/`copyto` plus a
`view`): it runs on the board's ARM core for every request.

This module is the single definition of the wire format: the IP generator (lepton_hls.ip_wrapper) takes its
lane widths and CRC parameters from here.
"""

from __future__ import annotations

import zlib

import numpy as np

from .errors import FormatError
from .fixedpoint import FixedFormat

WORD_BITS = 32
WORD_DTYPE = np.dtype("<u4")
MAX_WIRE_WIDTH = 32

# The output check word: CRC-32 of IEEE 802.3 (zlib.crc32) over the packet's data words as little-endian bytes,
# i.e. each 32-bit word fed least significant bit first. The fabric computes it bit-serially with these
# constants (reflected polynomial, all-ones initial value and final XOR).
CHECK_WORDS = 1
CRC32_POLY_REFLECTED = 0xEDB88320
CRC32_INIT = 0xFFFFFFFF
CRC32_XOROUT = 0xFFFFFFFF

_SIGNED = {8: np.dtype("<i1"), 16: np.dtype("<i2"), 32: np.dtype("<i4")}
_UNSIGNED = {8: np.dtype("<u1"), 16: np.dtype("<u2"), 32: np.dtype("<u4")}


def lane_bits(fmt: FixedFormat) -> int:
    """The lane width L that carries one value of `fmt` on the wire."""
    if fmt.width > MAX_WIRE_WIDTH:
        raise FormatError(
            f"{fmt} is {fmt.width} bits wide; the stream carries at most {MAX_WIRE_WIDTH}-bit values. "
            "Narrow the layer's output precision in the hls4ml config"
        )
    return lane_bits_for_width(fmt.width)


def lane_bits_for_width(width: int) -> int:
    """The lane width for a `width`-bit value (callers check `width <= MAX_WIRE_WIDTH`)."""
    return 8 if width <= 8 else 16 if width <= 16 else 32


def lane_dtype(fmt: FixedFormat) -> np.dtype:
    """The numpy dtype of one lane (signed formats sign-extend, unsigned ones zero-extend)."""
    return (_SIGNED if fmt.signed else _UNSIGNED)[lane_bits(fmt)]


def lanes_per_word(fmt: FixedFormat) -> int:
    return WORD_BITS // lane_bits(fmt)


def words_for(n_values: int, fmt: FixedFormat) -> int:
    """Stream words that carry `n_values` values of `fmt` (the last word zero-padded)."""
    per = lanes_per_word(fmt)
    return -(-int(n_values) // per)


def packet_words(n_values: int, fmt: FixedFormat) -> int:
    """Words of an output packet carrying `n_values` values: the data words and the check word."""
    return words_for(n_values, fmt) + CHECK_WORDS


def check_word(data_words: np.ndarray) -> int:
    """The CRC-32 that follows `data_words` (uint32) on the wire."""
    return zlib.crc32(np.ascontiguousarray(data_words, dtype=WORD_DTYPE)) & 0xFFFFFFFF


def with_check_word(data_words: np.ndarray) -> np.ndarray:
    """An output packet: `data_words` followed by their check word."""
    out = np.empty(np.size(data_words) + CHECK_WORDS, dtype=WORD_DTYPE)
    out[:-1] = data_words
    out[-1] = check_word(out[:-1])
    return out


def pack_into(words: np.ndarray, raw, fmt: FixedFormat) -> int:
    """Pack raw values (any shape, C order) into the front of the uint32 array `words`; return the number of
    words used. `raw` must already lie in the format's range (what `FixedFormat.quantize` returns)."""
    raw = np.asarray(raw)
    n = raw.size
    n_words = words_for(n, fmt)
    if words.size < n_words:
        raise ValueError(f"{n} values of {fmt} need {n_words} words; the buffer holds {words.size}")
    lanes = words[:n_words].view(lane_dtype(fmt))
    # One pass: int64 -> lane type written straight into the DMA buffer (two's complement truncation is the
    # sign/zero extension the wire wants, since every value fits in `fmt.width <= L` bits).
    np.copyto(lanes[:n], raw.reshape(-1), casting="unsafe")
    if lanes.size > n:
        lanes[n:] = 0
    return n_words


def pack(raw, fmt: FixedFormat) -> np.ndarray:
    """Raw values -> a new array of little-endian uint32 stream words."""
    raw = np.asarray(raw)
    words = np.empty(words_for(raw.size, fmt), dtype=WORD_DTYPE)
    pack_into(words, raw, fmt)
    return words


def unpack(words: np.ndarray, fmt: FixedFormat, count: int, out: np.ndarray | None = None) -> np.ndarray:
    """The first `count` raw values (int64) carried by `words`. Lanes are reduced to the format's width
    (sign-extended from bit `w-1` for signed formats), exactly what an `ap_fixed` port would read."""
    n_words = words_for(count, fmt)
    if words.size < n_words:
        raise ValueError(f"{count} values of {fmt} need {n_words} words; got {words.size}")
    lanes = np.asarray(words[:n_words]).view(lane_dtype(fmt))[:count]
    if out is None:
        out = np.empty(count, dtype=np.int64)
    np.copyto(out, lanes, casting="unsafe")
    spare = lane_bits(fmt) - fmt.width
    if spare:
        if fmt.signed:
            shift = np.int64(64 - fmt.width)
            np.left_shift(out, shift, out=out)
            np.right_shift(out, shift, out=out)
        else:
            np.bitwise_and(out, (np.int64(1) << np.int64(fmt.width)) - 1, out=out)
    return out


def lanes_valid(words: np.ndarray, fmt: FixedFormat, count: int) -> bool:
    """True when every lane holds a correctly extended `fmt` value and the padding lanes are zero: the
    invariants a receiver can check without knowing the values (corruption of spare bits breaks them)."""
    n_words = words_for(count, fmt)
    lanes = np.asarray(words[:n_words]).view(lane_dtype(fmt))
    if lanes.size > count and np.any(lanes[count:]):
        return False
    if lane_bits(fmt) == fmt.width:
        return True
    body = lanes[:count]
    lo, hi = fmt.raw_min, fmt.raw_max
    return bool(body.min(initial=lo) >= lo and body.max(initial=hi) <= hi)


def bytes_per_sample(fmt: FixedFormat, values_per_sample: int) -> float:
    """Average bytes on the wire per sample (lanes, not counting the last word's padding)."""
    return values_per_sample * lane_bits(fmt) / 8


class LaneQuantizer:
    """Real values -> raw lanes written straight into a DMA buffer, bit-identical to
    `FixedFormat.quantize` followed by `pack_into`, in as few numpy passes as the format allows: at batch 1
    the request path is dominated by per-operation overhead (scalar operands cost a ufunc more than a
    same-shape array does), not by arithmetic. Formats whose rounding or overflow mode has no short form go
    through `FixedFormat.quantize`."""

    def __init__(self, fmt: FixedFormat):
        self.fmt = fmt
        self.dtype = lane_dtype(fmt)
        self.per = lanes_per_word(fmt)
        self.scale = float(2.0 ** max(min(fmt.frac, 900), -900))
        self.fast = (
            fmt.rounding in ("TRN", "RND", "RND_CONV") and fmt.saturation in ("WRAP", "SAT") and abs(fmt.frac) < 900
        )
        self.cast_wraps = fmt.saturation == "WRAP" and lane_bits(fmt) == fmt.width
        self.lo, self.hi = float(fmt.raw_min), float(fmt.raw_max)
        # sum of squares below this bound => every |value| < 2**(w-1) - 1: no overflow can happen, and the
        # float -> lane cast of the rounded values is exact
        self.in_range_bound = float((2.0 ** (fmt.width - 1) - 1) ** 2) if fmt.signed else -1.0
        self._round = {"TRN": np.floor, "RND_CONV": np.rint}.get(fmt.rounding)
        self._trn = fmt.rounding == "TRN"
        self._plans: dict = {}
        self._grow(64)

    def _grow(self, n: int) -> None:
        self._plans = {}
        self._s = np.empty(n)
        self._i = np.empty(n, dtype=np.int64)
        self._scale = np.full(min(n, 256), self.scale)
        self._divisor = np.full(min(n, 256), 1.0 / self.scale)
        self._half = np.full(n, 0.5)

    def into(self, words: np.ndarray, x: np.ndarray) -> int:
        """Quantize float64 `x` (any shape, C order) into the uint32 `words`; return words used."""
        return self.into_lanes(words, words.view(self.dtype), x)

    def into_lanes(self, words: np.ndarray, lanes: np.ndarray, x: np.ndarray) -> int:
        """As `into`, with `lanes` the whole of `words` viewed as the lane dtype (made once per buffer)."""
        fmt = self.fmt
        n = x.size
        if not self.fast:
            return pack_into(words, fmt.quantize(x), fmt)
        plan = self._plans.get((n, id(lanes)))
        if plan is None or plan[0] is not lanes:
            plan = self._plan(n, lanes)
        _, s, scale, body, pad, n_words, div = plan
        if div:  # floor(x * 2**frac) in one pass: floor division by an exact power of two (small batches)
            np.floor_divide(x.reshape(-1), scale, out=s)
        else:
            np.multiply(x.reshape(-1), scale, out=s)
        # Screen NaN, Inf and magnitudes past 2**61 (quantize clips at 2**62), sending those to the careful
        # path, and find out whether anything can overflow at all.
        if n <= 64:  # one sum of squares: fewest calls (vdot, unlike dot, never reaches a threaded BLAS)
            sq = float(np.vdot(s, s))
            if not sq < 2.0**122:
                return pack_into(words, fmt.quantize(x), fmt)
            in_range = sq < self.in_range_bound
        else:  # the exact range, element by element
            lo, hi = float(s.min()), float(s.max())
            if not (-(2.0**61) < lo and hi < 2.0**61):
                return pack_into(words, fmt.quantize(x), fmt)
            in_range = fmt.signed and self.lo + 1 < lo and hi < self.hi
        if div:
            pass
        elif self._round is None:  # RND: floor(x + 1/2)
            np.add(s, self._half[:n], out=s)
            np.floor(s, out=s)
        else:
            self._round(s, out=s)
        if in_range:
            body[...] = s  # integral and in range: the cast is exact
        elif fmt.saturation == "SAT":
            np.minimum(s, self.hi, out=s)
            np.maximum(s, self.lo, out=s)
            body[...] = s
        elif self.cast_wraps:
            i64 = self._i[:n]
            i64[...] = s
            body[...] = i64  # the truncating int64 -> lane cast is the wrap
        else:
            i64 = self._i[:n]
            i64[...] = s
            body[...] = fmt.overflow(i64)
        if pad is not None:
            pad[...] = 0
        return n_words

    def _plan(self, n: int, lanes: np.ndarray) -> tuple:
        """Views for batches of `n` values into `lanes`, made once: slicing costs as much as a small ufunc."""
        if self._s.size < n:
            self._grow(n)
        if len(self._plans) > 64:
            self._plans.clear()
        n_words = -(-n // self.per)
        if lanes.size < n_words * self.per:
            raise ValueError(
                f"{n} values of {self.fmt} need {n_words} words; the buffer holds {lanes.size // self.per}"
            )
        pad = lanes[n : n_words * self.per] if n_words * self.per > n else None
        # A same-shape operand spares a small batch the scalar-broadcast setup; a large one the memory traffic.
        # Floor division costs an fmod per element: worth one pass fewer only where per-call overhead rules.
        div = self._trn and n <= 256
        scale = (self._divisor if div else self._scale)[:n] if n <= 256 else self.scale
        plan = (lanes, self._s[:n], scale, lanes[:n], pad, n_words, div)
        self._plans[(n, id(lanes))] = plan
        return plan


class LaneDequantizer:
    """Raw lanes of a DMA buffer -> real values in two cheap passes; flags lanes that break the wire
    invariants (spare bits not a sign/zero extension, padding not zero)."""

    def __init__(self, fmt: FixedFormat):
        self.fmt = fmt
        self.dtype = lane_dtype(fmt)
        self.per = lanes_per_word(fmt)
        self.bits = lane_bits(fmt)
        self.step = float(2.0**-fmt.frac)
        self.checked = self.bits != fmt.width
        self.lo, self.hi = fmt.raw_min, fmt.raw_max
        self._step = np.full(64, self.step)
        self._plans: dict = {}

    def into(self, out: np.ndarray, words: np.ndarray, count: int) -> bool:
        """Write `count` values into float64 `out` (flat view); return False when the lanes are invalid."""
        return self.from_lanes(out, words, words.view(self.dtype), count)

    def from_lanes(self, out: np.ndarray, words: np.ndarray, lanes: np.ndarray, count: int) -> bool:
        plan = self._plans.get((count, id(lanes)))
        if plan is None or plan[0] is not lanes:
            plan = self._plan(count, words, lanes)
        _, body, step, last, shift = plan
        ok = True
        if self.checked:
            ok = bool(body.min() >= self.lo and body.max() <= self.hi)
        if shift and int(words[last]) >> shift:
            ok = False  # padding lanes must be zero
        out[...] = body
        np.multiply(out, step, out=out)
        return ok

    def _plan(self, count: int, words: np.ndarray, lanes: np.ndarray) -> tuple:
        if self._step.size < min(count, 256):
            self._step = np.full(256, self.step)
            self._plans = {}
        if len(self._plans) > 64:
            self._plans.clear()
        n_words = -(-count // self.per)
        used = count - (n_words - 1) * self.per
        shift = used * self.bits if used < self.per else 0
        step = self._step[:count] if count <= 256 else self.step
        plan = (lanes, lanes[:count], step, n_words - 1, shift)
        self._plans[(count, id(lanes))] = plan
        return plan
