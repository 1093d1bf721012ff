"""The compiled plan's steps (engine_plan.py), one class per way a node runs: each stage's `make` proves from the
node's formats and bounds that its specialised arithmetic equals the interpreter's (returning None otherwise),
and its `bind(n, values)` returns in-place numpy calls on buffers for batch size n. docs/engine-ir.md ("The
compiled plan") states the rules; tests/test_engine_plan.py holds every stage to the interpreter."""

from __future__ import annotations

from functools import partial

import numpy as np

from .engine_ops import FLOAT_EXACT, _Convert, _top_bits
from .errors import EmulationError

EXP_TABLE_LIMIT = 1 << 17  # softmax differences with at most this many values get one direct table (1 MiB)
IM2COL_CHANNELS = 8  # convolutions with fewer input channels build one im2col matrix (as engine.py's float path)
IM2COL_ONE_COPY = 4096  # im2col matrices up to this many values are filled by one copy, larger ones per offset
FLOAT_WRAP_WIDTH = 52  # input formats up to this width wrap in float64 (every step below 2**53)
# ap_fixed's rounding of an exact real value (a float64 with fraction bits), as (offset added first, then this
# function): what FixedFormat.quantize applies to scaled reals, and what a right shift of raw integers computes.
ROUNDING = {
    "TRN": (0.0, np.floor),
    "RND": (0.5, np.floor),
    "RND_CONV": (0.0, np.rint),
    "TRN_ZERO": (0.0, np.trunc),
    "RND_MIN_INF": (-0.5, np.ceil),
}
INT, FLOAT = "int", "float"


# ---- float post-processing: conversions after a matrix product, as clamps and one rounding --------------
class _FloatPost:
    """A chain of ap_fixed conversions (each optionally preceded by relu) applied to exact float values.

    The first conversion that does anything is folded into the producing product: `scale` (a power of two) and
    `offset` (the rounding's half LSB) are applied there. The rest become in-place numpy calls. `ok` is False
    where a conversion cannot be expressed this way (a wrapping overflow, an unusual rounding mode) or float64
    might not be exact."""

    def __init__(self, chain, in_lo: int, in_hi: int):
        self.ok = True
        self.scale_exp = 0  # the folded scaling, as a power of two applied to the raw input units
        self.offset = 0.0  # added after folding, before the first clamp/rounding
        self.calls: list[tuple] = []  # (ufunc, constant) or (ufunc, None) applied in place
        self.lo, self.hi = in_lo, in_hi
        folded = False
        e = 0  # a pending exact scaling (pure left shifts not yet applied)
        mag = max(abs(in_lo), abs(in_hi))
        for conv, relu in chain:
            sh = conv.shift - e  # what remains to apply to the float value (pending pure scalings included)
            rounds = sh > 0
            f = conv.fmt
            lo_c = hi_c = None
            if conv.overflow:
                if f.saturation != "SAT":
                    self.ok = False
                    return
                lo_c = None if conv._low_ok else f.raw_min
                hi_c = None if conv._high_ok else f.raw_max
            if relu:
                lo_c = 0 if lo_c is None else max(lo_c, 0)
            mag_out = max(abs(conv.lo), abs(conv.hi))
            if mag_out >= FLOAT_EXACT // 2:  # results, and clamp bounds plus a half LSB, exact in float64
                self.ok = False
                return
            if not rounds and lo_c is None and hi_c is None:
                e = -sh  # a pure scaling (exact): applied with the next step
                self.lo, self.hi, mag = conv.lo, conv.hi, mag_out
                continue
            off, fn = ROUNDING.get(f.rounding, (None, None)) if rounds else (0.0, None)
            if off is None:
                self.ok = False
                return
            # Exactness: before rounding, the value in units of the result's LSB * 2**-shift is an integer below
            # mag + 2**shift (the half-LSB offset included).
            if mag + (1 << max(conv.shift, 0)) >= FLOAT_EXACT:
                self.ok = False
                return
            if not folded:
                self.scale_exp, self.offset, folded = -sh, off, True
            else:
                if sh:
                    self.calls.append((np.multiply, 2.0**-sh))
                if off:
                    self.calls.append((np.add, off))
            if lo_c is not None:
                self.calls.append((np.maximum, lo_c + off))
            if hi_c is not None:
                self.calls.append((np.minimum, hi_c + off))
            if fn is not None:
                self.calls.append((fn, None))
            e = 0
            self.lo, self.hi, mag = conv.lo, conv.hi, mag_out
        if e:
            if not folded:
                self.scale_exp, folded = e, True
            else:
                self.calls.append((np.multiply, 2.0**e))

    def steps(self, v: np.ndarray) -> list:
        return [partial(fn, v, out=v) if c is None else partial(fn, v, _k(c, v), out=v) for fn, c in self.calls]

    def keeps_ones(self) -> bool:
        """Whether a column that enters as 1 + offset (a bias of 1) leaves as exactly 1."""
        t = np.array([[1.0 + self.offset]])
        for step in self.steps(t):
            step()
        return t[0, 0] == 1.0


# ---- stages ---------------------------------------------------------------------------------------------
class _Stage:
    """How one node (or a product and its fused activation) runs: `make` (on subclasses) decides whether it can,
    `bind` returns its calls for one batch size."""

    out: int  # the node whose value this stage produces
    kind: str  # INT or FLOAT
    wants: str = INT  # the kind it reads its inputs in
    ones: bool = False  # it reads its input's buffer with the column of ones

    def reads(self) -> tuple[int, ...]:
        return ()

    def bind(self, n: int, vals: _Values) -> list:
        raise NotImplementedError


class _InputInt(_Stage):
    """Raw integers in (raw mode): the input format's overflow applied, as `FixedFormat.overflow`; or floats
    quantized by `FixedFormat.quantize` itself where the float path cannot express the format."""

    kind = INT

    def __init__(self, i: int, node, mode: str):
        self.out, self.fmt, self.mode = i, node.format, mode

    def bind(self, n, vals):
        v = vals.new(self.out, INT)
        f = self.fmt
        if self.mode == "float":
            return [lambda x: np.copyto(v, f.quantize(x))]
        if f.saturation == "WRAP":
            mask, lo = (1 << f.width) - 1, f.raw_min
            if lo:
                return [
                    lambda x: np.subtract(x, lo, out=v),
                    partial(np.bitwise_and, v, _k(mask, v), out=v),
                    partial(np.add, v, _k(lo, v), out=v),
                ]
            return [lambda x: np.bitwise_and(x, mask, out=v)]
        if f.saturation == "SAT":
            return [lambda x: np.maximum(x, f.raw_min, out=v), partial(np.minimum, v, _k(f.raw_max, v), out=v)]
        return [lambda x: np.copyto(v, f.overflow(x))]


class _InputFloat(_Stage):
    """Model-domain floats in: `FixedFormat.quantize` as in-place float64 calls (its own operations, so its
    values), the overflow as clamps (SAT) or an exact `mod` (WRAP).

    One dot product of the batch with itself decides how much of that is needed: it bounds every |x|, so below
    `fits2` every rounded value is inside a signed format already (no overflow step at all), below `exact2`
    every |x| * 2**frac is below 2**52, so each step of the wrap is exact (SAT: any finite batch). A batch above
    both (non-finite, or values so large that quantize's clip to +-2**62 matters) goes through
    `FixedFormat.quantize` itself, which also raises for NaN and Inf. The bounds are compared with a factor 4
    of margin, far more than the dot product's rounding."""

    kind = FLOAT

    @classmethod
    def make(cls, i: int, node):
        f = node.format
        if f.rounding not in ROUNDING:
            return None
        if f.saturation == "WRAP" and f.width > FLOAT_WRAP_WIDTH or f.saturation not in ("WRAP", "SAT"):
            return None
        return cls(i, f)

    def __init__(self, i: int, fmt):
        self.out, self.fmt = i, fmt

    def bind(self, n, vals):
        v = vals.new(self.out, FLOAT)
        f = self.fmt
        scale = _k(2.0**f.frac, v)  # exact: multiplying by a power of two is ldexp
        with np.errstate(over="ignore"):
            fits = (2.0 ** (f.width - 1) - 1) * 2.0**-f.frac if f.signed else 0.0
            fits2 = np.float64(fits) ** 2 / 4  # |x| * 2**frac < 2**(width-1) - 1: rounds into the format
            exact = np.inf if f.saturation == "SAT" else 2.0 ** (FLOAT_WRAP_WIDTH - f.frac)
            exact2 = np.float64(exact) ** 2 / 4
        offset, rnd = ROUNDING[f.rounding]
        offset = _k(offset, v)
        lo, hi, span = _k(f.raw_min, v), _k(f.raw_max, v), _k(1 << f.width, v)
        sat = f.saturation == "SAT"
        minimum, maximum = np.minimum.reduce, np.maximum.reduce

        def feed(x):
            flat = x.reshape(-1)
            ss = np.dot(flat, flat)
            if not ss < exact2:
                np.copyto(v, f.quantize(x))
                return
            np.multiply(x, scale, out=v, dtype=np.float64)  # float32 inputs too: no float32 under/overflow
            if offset:
                np.add(v, offset, out=v)
            rnd(v, out=v)
            if ss < fits2 or (minimum(v, axis=None) >= lo and maximum(v, axis=None) <= hi):
                return  # every value inside the format already (the norm says so, or the extremes do)
            if sat:
                np.maximum(v, lo, out=v)
                np.minimum(v, hi, out=v)
                return
            # (r - raw_min) mod 2**width + raw_min: |r| <= 2**52 and 2**(width-1) <= 2**51 keep every step exact
            if lo:
                np.subtract(v, lo, out=v)
            np.remainder(v, span, out=v)
            if lo:
                np.add(v, lo, out=v)

        return [feed]


class _Alias(_Stage):
    """`reshape`: the same buffer seen with the node's shape."""

    def __init__(self, i: int, j: int, kind: str):
        self.out, self.src, self.kind = i, j, kind

    def bind(self, n, vals):
        vals.alias(self.out, self.src, self.kind)
        return []


class _Cast(_Stage):
    """A value copied into the other kind (exact: float values are integers below 2**53)."""

    def __init__(self, i: int, kind: str):
        self.out, self.kind = i, kind
        self.wants = INT if kind == FLOAT else FLOAT

    def bind(self, n, vals):
        src = vals.views[(self.out, self.wants)]
        dst = vals.new(self.out, self.kind)
        return [partial(np.copyto, dst, src, casting="unsafe")]


class _Generic(_Stage):
    """Any node, through its own function (the interpreter's code); its result copied into the plan's buffer."""

    kind = INT

    def __init__(self, i: int, node):
        self.out, self.fn, self.inputs = i, node.fn, tuple(node.inputs)

    def reads(self):
        return self.inputs

    def bind(self, n, vals):
        ins = [vals.views[(j, INT)] for j in self.inputs]
        out = vals.new(self.out, INT)
        fn = self.fn
        return [lambda: np.copyto(out, fn(ins))]


class _Linear(_Stage):
    """A dense or (few-channel) convolution layer, and the relu/linear activation fused after it, as one float64
    matrix product plus clamps and a rounding (see the module docstring for the exactness argument)."""

    kind = wants = FLOAT

    @classmethod
    def make(cls, i: int, node, nodes, act: int | None):
        parts = node.parts
        mac, conv = parts.get("mac"), parts.get("convert")
        if mac is None or not mac.linear or mac.overflow:
            return None
        x = nodes[node.inputs[0]]
        geo = parts.get("geometry")
        if geo is None and len(x.shape) != 1:
            return None  # a dense over the last axis of a rank-2 value: the node's own function
        if geo is not None and geo["ch"] >= IM2COL_CHANNELS:
            return None
        chain = [(conv, False)]
        out = i
        if act is not None:
            a = nodes[act]
            chain.append((a.parts["convert"], a.parts["function"] == "relu"))
            out = act
        post = _FloatPost(chain, mac.lo, mac.hi)
        if not post.ok:
            return None
        # Exactness of the product: every partial sum, in accumulator units, below 2**53 (bias and half-LSB
        # offset included: they ride on the column of ones).
        x_lo, x_hi = parts.get("x_bounds", (x.lo, x.hi))
        w = mac.w
        off = int(round(post.offset * 2.0 ** -post.scale_exp)) if post.offset else 0
        b = [int(v) + off for v in mac.bias]
        bound = max(abs(x_lo), abs(x_hi)) * int(np.abs(w).sum(axis=0).max(initial=0)) * (1 << mac.shift)
        bound += max((abs(v) for v in b), default=0)
        if bound >= FLOAT_EXACT:
            return None
        return cls(i, out, node, mac, post, b)

    def __init__(self, i, out, node, mac, post, b):
        self.out, self.src = out, node.inputs[0]
        self.geo = node.parts.get("geometry")
        self.ones = self.geo is None
        scale = 2.0 ** (mac.shift + post.scale_exp)
        w = mac.w.astype(np.float64) * scale
        bias = np.asarray(b, dtype=np.float64) * 2.0**post.scale_exp
        self.w = np.vstack([w, bias[None, :]])  # the bias row meets the input's column of ones
        self.post = post
        self.n_out = mac.n_out

    def reads(self):
        return (self.src,)

    def bind(self, n, vals):
        if self.geo is None:
            x = vals.flat[self.src]  # (n, n_in + 1): the last column is ones
            v = vals.new(self.out, FLOAT)
            flat = vals.flat[self.out]
            if flat.shape[1] > self.n_out and self.post.keeps_ones():
                # The next product's column of ones comes out of this one (an extra output column with bias 1),
                # so every call below runs on the whole contiguous buffer.
                w = np.zeros((len(self.w), self.n_out + 1))
                w[:, : self.n_out], w[-1, -1] = self.w, 1.0 + self.post.offset
                return [partial(np.matmul, x, w, out=flat)] + self.post.steps(flat)
            out2d = _view(v, (n, self.n_out))
            return [partial(np.matmul, x, self.w, out=out2d)] + self.post.steps(v)
        return self._bind_conv(n, vals)

    def _bind_conv(self, n, vals):
        g = self.geo
        ih, iw, ch, kh, kw = g["ih"], g["iw"], g["ch"], g["kh"], g["kw"]
        pt, pb, pl, pr = g["pads"]
        oh, ow, sh, sw = g["oh"], g["ow"], g["sh"], g["sw"]
        x = _view(vals.views[(self.src, FLOAT)], (n, ih, iw, ch))
        steps = []
        if pt or pb or pl or pr:
            padded = np.zeros((n, ih + pt + pb, iw + pl + pr, ch), dtype=np.float64)
            steps.append(partial(np.copyto, padded[:, pt : pt + ih, pl : pl + iw], x))
            x = padded
        k = kh * kw * ch
        cols = np.ones((n * oh * ow, k + 1), dtype=np.float64)
        if n * oh * ow * k <= IM2COL_ONE_COPY:  # one strided copy: fewest calls
            win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # (n, H', W', ch, kh, kw)
            win = win[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw].transpose(0, 1, 2, 4, 5, 3)
            steps.append(partial(np.copyto, _view(cols[:, :k], (n, oh, ow, kh, kw, ch)), win))
        else:  # one copy per kernel offset: long inner loops
            dst = _view(cols[:, :k], (n, oh, ow, k))
            for j, (a, b) in enumerate((a, b) for a in range(kh) for b in range(kw)):
                src = x[:, a : a + (oh - 1) * sh + 1 : sh, b : b + (ow - 1) * sw + 1 : sw, :]
                steps.append(partial(np.copyto, dst[..., j * ch : (j + 1) * ch], src))
        v = vals.new(self.out, FLOAT)
        out = vals.flat[self.out]
        if out.shape[1] != v[0].size:  # a ones column follows: write through a contiguous buffer
            tmp = np.empty((n * oh * ow, self.n_out), dtype=np.float64)
            steps.append(partial(np.matmul, cols, self.w, out=tmp))
            steps.append(partial(np.copyto, v, _view(tmp, v.shape)))
        else:
            steps.append(partial(np.matmul, cols, self.w, out=_view(out, (n * oh * ow, self.n_out))))
        return steps + self.post.steps(v)


class _ActivationFloat(_Stage):
    """A relu/linear activation on a float value (not fused into its producer): clamps, scaling, rounding."""

    kind = wants = FLOAT

    @classmethod
    def make(cls, i: int, node, x, x_kind: str):
        if x_kind != FLOAT or node.parts.get("function") not in ("relu", "linear"):
            return None
        post = _FloatPost([(node.parts["convert"], node.parts["function"] == "relu")], x.lo, x.hi)
        if not post.ok:
            return None
        return cls(i, node.inputs[0], post)

    def __init__(self, i, src, post):
        self.out, self.src, self.post = i, src, post

    def reads(self):
        return (self.src,)

    def bind(self, n, vals):
        x, v = vals.views[(self.src, FLOAT)], vals.new(self.out, FLOAT)
        p = self.post
        first = partial(np.multiply, x, _k(2.0**p.scale_exp, v), out=v) if p.scale_exp else partial(np.copyto, v, x)
        steps = [first]
        if p.offset:
            steps.append(partial(np.add, v, _k(p.offset, v), out=v))
        return steps + p.steps(v)


class _MaxPoolFloat(_Stage):
    """Unpadded max pooling with non-overlapping windows on float values (max is exact): the element-wise maximum
    of the window's cells, each a strided view."""

    kind = wants = FLOAT

    @classmethod
    def make(cls, i: int, node, x):
        parts = node.parts
        if parts.get("mode") != "max" or not parts.get("tiles"):
            return None
        post = _FloatPost([(parts["to_accum"], False), (parts["to_result"], False)], x.lo, x.hi)
        if not post.ok or post.offset or post.scale_exp:
            return None  # only conversions that keep the values (or clamp/round them in place)
        return cls(i, node, post)

    def __init__(self, i, node, post):
        self.out, self.src, self.post, self.geo = i, node.inputs[0], post, node.parts["geometry"]

    def reads(self):
        return (self.src,)

    def bind(self, n, vals):
        g = self.geo
        ih, iw, nf, ph, pw, oh, ow = (g[k] for k in ("ih", "iw", "nf", "ph", "pw", "oh", "ow"))
        x = _view(vals.views[(self.src, FLOAT)], (n, ih, iw, nf))[:, : oh * ph, : ow * pw]
        tiles = _view(x, (n, oh, ph, ow, pw, nf))
        v = vals.new(self.out, FLOAT)
        out = _view(v, (n, oh, ow, nf))
        cells = [tiles[:, :, a, :, b, :] for a in range(ph) for b in range(pw)]
        if len(cells) == 1:
            steps = [partial(np.copyto, out, cells[0])]
        else:  # element-wise maxima of the window's cells: long loops, unlike a reduction over two short axes
            steps = [partial(np.maximum, cells[0], cells[1], out=out)]
            steps += [partial(np.maximum, out, c, out=out) for c in cells[2:]]
        return steps + self.post.steps(v)


class _Softmax(_Stage):
    """hls4ml's softmax in place on int buffers: lookups with `take`, the balanced-tree sum as a plain sum (a
    matrix product with ones) where no partial sum can saturate (then every tree order gives the same sum), each
    conversion as `_Convert` does it, a conversion followed by taking the top bits as one shift where the
    converted values are non-negative. The stable variant reads a float input directly (max and difference are
    exact there)."""

    kind = INT

    @classmethod
    def make(cls, i: int, node, x, x_kind: str):
        p = node.parts
        if not p:
            return None
        n_slice = p["n_slice"]
        exp_table, inv_table, accum = p["exp_table"], p["inv_table"], p["accum"]
        emin, emax = int(exp_table.min()), int(exp_table.max())
        s_lo, s_hi = min(emin, n_slice * emin), max(emax, n_slice * emax)
        if s_lo < accum.raw_min or s_hi > accum.raw_max:
            return None  # partial sums may saturate: the tree order matters
        to_inv = _Convert(accum.frac, p["inv_inp"], s_lo, s_hi)
        vmin, vmax = int(inv_table.min()), int(inv_table.max())
        corners = [a * b for a in (emin, emax) for b in (vmin, vmax)]
        if max(abs(c) for c in corners) >= _Convert.LIMIT:
            return None
        to_out = _Convert(p["prod_frac"], node.format, min(corners), max(corners))
        norm = direct = None
        if p["implementation"] == "stable":
            if max(abs(x.lo), abs(x.hi)) * 2 >= _Convert.LIMIT:
                return None
            norm = _Convert(x.format.frac, p["inp_norm"], 0, x.hi - x.lo)
            direct = _direct_exp_table(p, x)
        convs = [to_inv, to_out] + ([norm] if norm is not None and direct is None else [])
        if any(not _int_convert_ok(c) for c in convs):
            return None
        # The stable variant reads a float value directly where its rows are the slices (one view).
        wants = x_kind if norm is not None and len(x.shape) == 1 else INT
        return cls(i, node, x, wants, norm, direct, to_inv, to_out)

    def __init__(self, i, node, x, wants, norm, direct, to_inv, to_out):
        self.out, self.src, self.p, self.wants = i, node.inputs[0], node.parts, wants
        self.x_fmt, self.x_bounds = x.format, (x.lo, x.hi)
        self.norm, self.direct, self.to_inv, self.to_out = norm, direct, to_inv, to_out

    def reads(self):
        return (self.src,)

    def bind(self, n, vals):
        p = self.p
        k = p["n_slice"]
        x = _view(vals.views[(self.src, self.wants)], (-1, k))
        rows = len(x)
        out = vals.new(self.out, INT)
        y = _view(out, (rows, k))
        idx = np.empty((rows, k), dtype=np.int64)
        tmp = np.empty((rows, k), dtype=np.int64)
        s = np.empty((rows, 1), dtype=np.int64)
        tmp1 = np.empty((rows, 1), dtype=np.int64)
        vv = np.empty((rows, 1), dtype=np.int64)
        steps = []
        exp_table = p["exp_table"]
        if self.norm is not None:
            m = np.empty((rows, 1), dtype=x.dtype)
            steps += [partial(np.maximum.reduce, x, axis=1, keepdims=True, out=m),
                      partial(np.subtract, m, x, out=idx, casting="unsafe")]  # exact integers either way
            if self.direct is not None:
                exp_table, cap = self.direct
                if cap is not None:
                    steps.append(partial(np.minimum, idx, _k(cap, idx), out=idx))
            else:
                steps += _convert_top_bits(self.norm, idx, tmp, p["inp_norm"], p["n_exp"])
        else:
            steps += _top_bits_into(x, idx, self.x_fmt, p["n_exp"], self.x_bounds)
        # The sum rides on a matrix product with ones; a RND conversion's half LSB rides on one more column.
        half = _rnd_half(self.to_inv)
        e_ext = np.full((rows, k + 1), half, dtype=np.int64)
        e = e_ext[:, :k]
        ones = np.ones((k + 1, 1), dtype=np.int64)
        steps += [
            partial(exp_table.take, idx, out=e, mode="clip"),  # indices proven in range
            partial(np.dot, e_ext, ones, out=s),
        ]
        steps += _convert_top_bits(self.to_inv, s, tmp1, p["inv_inp"], p["n_inv"], half_added=bool(half))
        steps += [partial(p["inv_table"].take, s, out=vv, mode="clip"), partial(np.multiply, e, vv, out=y)]
        return steps + _int_convert(self.to_out, y, tmp)


def _direct_exp_table(p: dict, x) -> tuple[np.ndarray, int | None] | None:
    """The stable softmax's `exp_table[_top_bits(inp_norm(d))]` for every difference d = max - x in
    [0, x.hi - x.lo], computed by the interpreter's own arithmetic, cut after its last change (`cap`: larger
    differences are clamped to it; None when nothing is cut). None when the range is too wide for a table."""
    span = x.hi - x.lo
    if span >= EXP_TABLE_LIMIT:
        return None
    d = np.arange(span + 1, dtype=np.int64)
    table = p["exp_table"][_top_bits(p["inp_norm"].requantize(d, x.format.frac), p["inp_norm"], p["n_exp"])]
    changes = np.flatnonzero(table[1:] != table[:-1])
    last = int(changes[-1]) + 1 if changes.size else 0
    if last == span:
        return table, None
    return np.ascontiguousarray(table[: last + 1]), last


# ---- in-place integer helpers ---------------------------------------------------------------------------
def _int_convert_ok(conv: _Convert) -> bool:
    if conv.shift > 0 and conv.fmt.rounding not in ("TRN", "RND", "RND_CONV"):
        return False
    return not conv.overflow or conv.fmt.saturation in ("SAT", "WRAP")


def _rnd_half(conv: _Convert) -> int:
    """The half LSB a RND conversion adds before its shift (0 for the others)."""
    return 1 << (conv.shift - 1) if conv.shift > 0 and conv.fmt.rounding == "RND" else 0


def _int_convert(conv: _Convert, v: np.ndarray, tmp: np.ndarray, then_shift: int = 0, half_added: bool = False) -> list:
    """`conv` as in-place calls on `v` (`tmp`: scratch of the same shape): `_Convert.__call__`'s arithmetic.

    With `then_shift`, the converted values are also shifted right by that many bits, in the same final shift:
    `(a >> s) >> t == a >> (s + t)`, and clamping commutes with the (monotonic) shift, the clamp bounds shifted
    alike. Only for conversions that never wrap (the caller checks). `half_added`: the caller already added a
    RND conversion's half LSB."""
    sh, f = conv.shift, conv.fmt
    steps = []
    if sh < 0:
        steps.append(partial(np.left_shift, v, _k(-sh, v), out=v))
        sh = 0
    elif sh > 0:
        if f.rounding == "RND" and not half_added:
            steps.append(partial(np.add, v, _k(1 << (sh - 1), v), out=v))
        elif f.rounding == "RND_CONV":  # ties to even: add half - 1, plus 1 when the floor is odd
            steps += [
                partial(np.right_shift, v, _k(sh, v), out=tmp),
                partial(np.bitwise_and, tmp, _k(1, v), out=tmp),
                partial(np.add, v, tmp, out=v),
                partial(np.add, v, _k((1 << (sh - 1)) - 1, v), out=v),
            ]
    if sh + then_shift:
        steps.append(partial(np.right_shift, v, _k(sh + then_shift, v), out=v))
    if conv.overflow:
        if f.saturation == "SAT":
            if not conv._high_ok:
                steps.append(partial(np.minimum, v, _k(f.raw_max >> then_shift, v), out=v))
            if not conv._low_ok:
                steps.append(partial(np.maximum, v, _k(f.raw_min >> then_shift, v), out=v))
        else:  # WRAP
            if f.raw_min:
                steps.append(partial(np.subtract, v, _k(f.raw_min, v), out=v))
            steps.append(partial(np.bitwise_and, v, _k((1 << f.width) - 1, v), out=v))
            if f.raw_min:
                steps.append(partial(np.add, v, _k(f.raw_min, v), out=v))
    return steps


def _convert_top_bits(conv: _Convert, v: np.ndarray, tmp: np.ndarray, f, n_bits: int, half_added=False) -> list:
    """`conv`, then `_top_bits(v, f, n_bits)`, in place: fused into one shift where the converted values
    are non-negative and never wrap (the mask then changes nothing)."""
    if conv.lo >= 0 and not (conv.overflow and conv.fmt.saturation == "WRAP"):
        return _int_convert(conv, v, tmp, f.width - n_bits, half_added)
    return _int_convert(conv, v, tmp, 0, half_added) + _top_bits_into(v, v, f, n_bits, conv.bounds)


def _top_bits_into(src: np.ndarray, dst: np.ndarray, f, n_bits: int, bounds: tuple[int, int]) -> list:
    """`_top_bits` into `dst`: the mask is left out where the bounds prove the bits above `width` are 0."""
    lo, hi = bounds
    sh = f.width - n_bits
    if lo >= 0 and hi < (1 << f.width):
        return [partial(np.right_shift, src, _k(sh, dst), out=dst)]
    return [partial(np.bitwise_and, src, _k((1 << f.width) - 1, dst), out=dst),
            partial(np.right_shift, dst, _k(sh, dst), out=dst)]


# ---- buffers ---------------------------------------------------------------------------------------------
class _Values:
    """The per-batch-size buffers: each node's value by kind, as a view (n, *shape); float values sit in a
    per-sample-flat buffer whose last column holds ones when a matrix product reads it."""

    def __init__(self, n: int, nodes, ones: set[int]):
        self.n, self.nodes, self.ones = n, nodes, ones
        self.views: dict[tuple[int, str], np.ndarray] = {}
        self.flat: dict[int, np.ndarray] = {}  # float node -> its (n, size [+ 1]) buffer

    def new(self, i: int, kind: str) -> np.ndarray:
        shape = (self.n,) + self.nodes[i].shape
        if kind == INT:
            v = np.empty(shape, dtype=np.int64)
        else:
            size = int(np.prod(self.nodes[i].shape))
            flat = np.ones((self.n, size + (i in self.ones)), dtype=np.float64)
            self.flat[i] = flat
            v = _view(flat[:, :size], shape)
        self.views[(i, kind)] = v
        return v

    def alias(self, i: int, j: int, kind: str) -> None:
        shape = (self.n,) + self.nodes[i].shape
        if kind == FLOAT:
            self.flat[i] = flat = self.flat[j]
            self.views[(i, kind)] = _view(flat[:, : int(np.prod(shape[1:]))], shape)
        else:
            self.views[(i, kind)] = _view(self.views[(j, kind)], shape)


def _k(value, like: np.ndarray) -> np.ndarray:
    """A constant operand as a 0-d array of `like`'s dtype: numpy converts nothing per call."""
    return np.array(value, dtype=like.dtype)


def _view(a: np.ndarray, shape) -> np.ndarray:
    """`a` reshaped without copying: a bound plan writes and reads through its views, so a silent copy would
    leave a stale value behind."""
    v = a.reshape(shape)
    if v.size and not np.may_share_memory(v, a):
        raise EmulationError(f"engine plan: a {a.shape} buffer cannot be seen as {shape} without a copy (a bug)")
    return v
