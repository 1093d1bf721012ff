"""Raw fixed-point values <-> 32-bit AXI4-Stream words, as `docs/package-layout.md` ("Numbers on the wire")
defines them.

A value of a `w`-bit format travels in a lane of L = 8, 16 or 32 bits (the smallest that holds `w`),
sign-extended (signed formats) or zero-extended (unsigned); lanes are packed little-endian, sample-major, with
no gap between samples, and the last word is zero-padded. Everything here is one or two numpy passes
(`astype`/`copyto` plus a `view`): it runs on the board's ARM core for every request.
"""

from __future__ import annotations

import numpy as np

from .errors import FormatError
from .fixedpoint import FixedFormat

WORD_BITS = 32
WORD_DTYPE = np.dtype("<u4")
MAX_WIRE_WIDTH = 32

_SIGNED = {8: np.dtype("<i1"), 16: np.dtype("<i2"), 32: np.dtype("<i4")}
_UNSIGNED = {8: np.dtype("<u1"), 16: np.dtype("<u2"), 32: np.dtype("<u4")}


def lane_bits(fmt: FixedFormat) -> int:
    """The lane width L that carries one value of `fmt` on the wire."""
    if fmt.width > MAX_WIRE_WIDTH:
        raise FormatError(
            f"{fmt} is {fmt.width} bits wide; the stream carries at most {MAX_WIRE_WIDTH}-bit values. "
            "Narrow the layer's output precision in the hls4ml config"
        )
    return 8 if fmt.width <= 8 else 16 if fmt.width <= 16 else 32


def lane_dtype(fmt: FixedFormat) -> np.dtype:
    """The numpy dtype of one lane (signed formats sign-extend, unsigned ones zero-extend)."""
    return (_SIGNED if fmt.signed else _UNSIGNED)[lane_bits(fmt)]


def lanes_per_word(fmt: FixedFormat) -> int:
    return WORD_BITS // lane_bits(fmt)


def words_for(n_values: int, fmt: FixedFormat) -> int:
    """Stream words that carry `n_values` values of `fmt` (the last word zero-padded)."""
    per = lanes_per_word(fmt)
    return -(-int(n_values) // per)


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
