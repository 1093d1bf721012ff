"""The engine's arithmetic building blocks, shared by every layer kind's builder (engine.py, engine_merge.py,
engine_spatial.py, engine_plan_stages.py): an ap_fixed assignment with proven bounds (`_Convert`), the
products-and-accumulation of dense and convolution layers (`_Mac`), softmax's table index (`_top_bits`),
convolution windows (`_windows`)."""

from __future__ import annotations

import numpy as np

from .errors import EmulationError
from .fixedpoint import FixedFormat, _round_shift

FLOAT_EXACT = 2**53  # integers below this magnitude are exact in float64, and so is every sum that stays below it
FLOAT32_EXACT = 2**24  # the same for float32, which halves the memory traffic
LOOKUP_VALUES = 16  # inputs with at most this many possible values use per-value product tables


def _fmt(d) -> FixedFormat:
    return FixedFormat.from_dict(d)


class _Convert:
    """An ap_fixed assignment of raw integers with `from_frac` fraction bits, known to lie in [lo, hi], to `fmt`.
    Rounding and overflow are monotonic, so the bounds carry through exactly; the overflow step is left out
    where they prove it cannot trigger (hls4ml's derived accumulator types never overflow), and the common
    rounding modes take a few in-place passes instead of the general formula."""

    LIMIT = 1 << 61  # beyond this, int64 intermediates could wrap: always apply the overflow step

    def __init__(self, from_frac: int, fmt: FixedFormat, lo: int, hi: int):
        self.fmt, self.shift = fmt, from_frac - fmt.frac
        if max(abs(lo), abs(hi)) >= self.LIMIT:
            self.overflow, self.lo, self.hi = True, fmt.raw_min, fmt.raw_max
            self._low_ok = self._high_ok = False
            return
        rlo, rhi = (int(v) for v in self._round(np.array([lo, hi], dtype=np.int64)))
        self.overflow = rlo < fmt.raw_min or rhi > fmt.raw_max
        self._low_ok, self._high_ok = rlo >= fmt.raw_min, rhi <= fmt.raw_max
        if not self.overflow:
            self.lo, self.hi = rlo, rhi
        elif fmt.saturation == "SAT":
            self.lo, self.hi = min(max(rlo, fmt.raw_min), fmt.raw_max), max(min(rhi, fmt.raw_max), fmt.raw_min)
        else:
            self.lo, self.hi = fmt.raw_min, fmt.raw_max

    @property
    def bounds(self) -> tuple[int, int]:
        return self.lo, self.hi

    def _round(self, raw: np.ndarray) -> np.ndarray:
        sh, mode = self.shift, self.fmt.rounding
        if sh <= 0:
            return raw << -sh if sh else raw
        if mode == "TRN":
            return raw >> sh
        if mode == "RND":  # floor((raw + half) / 2**sh)
            t = raw + (1 << (sh - 1))
            t >>= sh
            return t
        if mode == "RND_CONV":  # ties go to the even neighbour: add half - 1, plus 1 when the floor is odd
            t = raw >> sh
            t &= 1
            t += raw
            t += (1 << (sh - 1)) - 1
            t >>= sh
            return t
        return _round_shift(raw, sh, mode)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        out = self._round(raw)
        if not self.overflow:
            return out
        f = self.fmt
        if f.saturation == "WRAP":
            t = out - f.raw_min if f.raw_min else out.copy() if out is raw else out
            t &= (1 << f.width) - 1
            if f.raw_min:
                t += f.raw_min
            return t
        if f.saturation == "SAT":
            # One-sided where the bounds allow (relu outputs never go below); in place on our own temporary.
            dst = None if out is raw else out
            if self._low_ok:
                return np.minimum(out, f.raw_max, out=dst)
            if self._high_ok:
                return np.maximum(out, f.raw_min, out=dst)
            return np.clip(out, f.raw_min, f.raw_max, out=dst)
        return f.overflow(out)


class _Mac:
    """Products, bias and accumulation of a dense or convolution layer: (M, n_in) raw -> (M, n_out) raw
    accumulators in `accum`'s format (docs/engine-ir.md, dense steps 1-2)."""

    def __init__(self, layer, p, x_fmt: FixedFormat, arrays, x_lo: int | None = None, x_hi: int | None = None):
        name = layer["name"]
        x_lo = x_fmt.raw_min if x_lo is None else x_lo
        x_hi = x_fmt.raw_max if x_hi is None else x_hi
        self.accum = _fmt(p["accum"])
        self.fx = x_fmt.frac
        bias_fmt = _fmt(p["bias"])
        self.bias = self.accum.requantize(arrays[f"{name}/bias"].astype(np.int64), bias_fmt.frac)
        self.product = p["product"]
        if self.product == "mult":
            self.w = arrays[f"{name}/kernel"].astype(np.int64)
            self.fp = self.fx + _fmt(p["weight"]).frac
        elif self.product == "exponential":
            sign = arrays[f"{name}/kernel_sign"].astype(np.int64)
            exp = arrays[f"{name}/kernel_exp"].astype(np.int64)
            self.w = np.where(sign == 1, 1, -1)  # for shapes only
            if p.get("product_format"):
                self.t_fmt = _fmt(p["product_format"])
            else:  # hls4ml 1.3.0's own definition
                width = int(p["exp_width"]) + int(p["data_width"])
                self.t_fmt = FixedFormat(2 * width, width)
            self.fp = self.t_fmt.frac
            self.exp_left, self.exp_right, self.negative = np.maximum(exp, 0), np.maximum(-exp, 0), sign == 0
        else:
            raise EmulationError(f"engine layer {name!r}: product {self.product!r} is not supported")
        self.n_in, self.n_out = self.w.shape
        wrap = self.accum.saturation == "WRAP"
        self.shift = self.accum.frac - self.fp
        # Fast path: products exact in the accumulator and modular accumulation: one matrix product.
        self.linear = self.product == "mult" and wrap and self.shift >= 0
        self.wrap = wrap
        self.overflow = True
        self.lo, self.hi = self.accum.raw_min, self.accum.raw_max
        if self.linear:
            # Bounds of every column's sum of products, in unbounded Python integers.
            w = self.w.astype(object)
            s_hi = np.where(self.w > 0, w * x_hi, w * x_lo).sum(axis=0)
            s_lo = np.where(self.w > 0, w * x_lo, w * x_hi).sum(axis=0)
            bias = self.bias.astype(object)
            lo = min(int(a << self.shift) + int(b) for a, b in zip(s_lo, bias))
            hi = max(int(a << self.shift) + int(b) for a, b in zip(s_hi, bias))
            self.overflow = lo < self.accum.raw_min or hi > self.accum.raw_max
            if not self.overflow:
                self.lo, self.hi = lo, hi
            # float64 sums are exact while every partial sum stays below 2**53 in magnitude.
            x_abs = max(abs(x_lo), abs(x_hi))
            bound = x_abs * int(np.abs(self.w).sum(axis=0).max(initial=0))
            self.use_float = bound < FLOAT_EXACT
            self.ftype = np.float32 if bound < FLOAT32_EXACT else np.float64
            self.wf = self.w.astype(self.ftype) if self.use_float else None
        self.lookup = None
        if not self.linear and wrap and x_hi - x_lo < LOOKUP_VALUES:
            # Few possible inputs: each value's row of converted products is a table, and the layer becomes
            # one matrix product per value with that value's indicator (exact: tables are integers).
            tables = []
            for v in range(x_lo, x_hi + 1):
                t = self.accum.requantize(self._products(np.full((1, self.n_in), v, dtype=np.int64))[0], self.fp)
                if t.any():
                    tables.append((v, t))
            bound = int(np.max(np.sum(np.max([np.abs(t) for _, t in tables], axis=0), axis=0))) if tables else 0
            self.lookup_float = bound < FLOAT_EXACT
            self.lookup = [(v, t.astype(np.float64) if self.lookup_float else t) for v, t in tables]

    @property
    def bounds(self) -> tuple[int, int]:
        return self.lo, self.hi

    @property
    def work(self) -> int:
        return 0 if self.linear or self.lookup is not None else self.n_in * self.n_out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.linear:
            if self.use_float:
                xf = x if x.dtype == self.ftype else x.astype(self.ftype)
                s = (xf @ self.wf).astype(np.int64)
            else:
                s = x @ self.w  # int64 wraps modulo 2**64: exact modulo 2**width for WRAP accumulators
            return self.finish(s)
        if self.lookup is not None:
            dtype = np.float64 if self.lookup_float else np.int64
            s = np.zeros((len(x), self.n_out), dtype=dtype)
            for v, table in self.lookup:
                s += (x == v).astype(dtype) @ table
            s = s.astype(np.int64) if self.lookup_float else s
            return self.accum.overflow(s + self.bias)
        p = self._products(x)
        p = self.accum.requantize(p, self.fp)
        if self.wrap:
            return self.accum.overflow(p.sum(axis=1) + self.bias)
        acc = np.broadcast_to(self.bias, (len(x), self.n_out)).copy()
        for i in range(self.n_in):
            acc = self.accum.overflow(acc + p[:, i, :])
        return acc

    def finish(self, s: np.ndarray) -> np.ndarray:
        """Sums of exact products (int64, product fraction bits) -> accumulators: scale, add the bias, overflow."""
        if self.shift:
            s <<= self.shift
        s += self.bias
        return self.accum.overflow(s) if self.overflow else s

    def _products(self, x: np.ndarray) -> np.ndarray:
        if self.product == "mult":
            return x[:, :, None] * self.w[None, :, :]
        t = self.t_fmt
        xt = t.requantize(x, self.fx)[:, :, None]
        y = t.overflow((xt << self.exp_left) >> self.exp_right)
        return np.where(self.negative, t.overflow(-y), y)


def _top_bits(raw: np.ndarray, f: FixedFormat, n_bits: int) -> np.ndarray:
    """The top `n_bits` of raw values' `f.width`-bit patterns, as unsigned numbers (softmax's table index)."""
    return (raw & ((1 << f.width) - 1)) >> (f.width - n_bits)


def _windows(x: np.ndarray, p: dict, kh: int, kw: int, pad_value: int) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, kh, kw, C) views of the padded input, one per output pixel."""
    n, h, w, c = x.shape
    pt, pb, pl, pr = int(p["pad_top"]), int(p["pad_bottom"]), int(p["pad_left"]), int(p["pad_right"])
    sh, sw = int(p["stride_height"]), int(p["stride_width"])
    oh, ow = int(p["out_height"]), int(p["out_width"])
    if pt or pb or pl or pr:
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, H', W', C, kh, kw)
    win = win[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
    return win.transpose(0, 1, 2, 4, 5, 3)
