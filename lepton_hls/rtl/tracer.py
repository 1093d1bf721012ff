"""Replay a `LayerGraph` op by op on da4ml's symbolic fixed-point arrays and trace it into combinational logic.

Each op reproduces the C simulation's arithmetic: hls4ml's dense/conv kernels store every product in the
accumulator type (so products are rounded to it when they are finer), start from the bias cast to it, add in
it, and cast the sum to the result type; relu is `max(x, 0)` assigned to the result type; everything else is
an ap_fixed assignment (`fixed.cast`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
from da4ml.trace import FixedVariable, FixedVariableArray, FixedVariableArrayInput, comb_trace
from lepton_host.fixedpoint import FixedFormat

from ..compat.da4ml import variables
from . import fixed
from .errors import RtlCoverageError
from .graph import LayerGraph, Op


@dataclass
class Traced:
    comb: object  # da4ml CombLogic
    input_format: FixedFormat
    input_shape: tuple[int, ...]
    output_format: FixedFormat
    output_shape: tuple[int, ...]
    output_layer: str  # the last layer the RTL computes
    uncovered: list[str] = field(default_factory=list)  # layers after it that the RTL leaves out


MAX_MACS = 100_000


def _macs(op: Op) -> int:
    if op.kind == "dense":
        return int(np.count_nonzero(op.arrays["weight"]))
    if op.kind == "conv":
        return int(np.prod(op.shape[:-1])) * int(np.count_nonzero(op.arrays["weight"]))
    return 0


def trace(graph: LayerGraph, exact_softmax: bool = True, max_macs: int = MAX_MACS) -> Traced:
    """Trace the graph; a final softmax is traced from hls4ml's own tables when the graph carries them
    (`exact_softmax`), else left out and named in `uncovered`."""
    inp_op = graph.input
    fixed.check_format(inp_op.result, f"input {inp_op.name}")
    x_in = FixedVariableArrayInput(inp_op.shape)
    x = fixed.declare_input(x_in, inp_op.result)
    last = inp_op
    macs = 0
    uncovered: list[str] = []
    for i, op in enumerate(graph.ops[1:], start=1):
        if op.kind == "softmax" and not (exact_softmax and op.arrays):
            uncovered = [f"{o.name} ({o.kind})" for o in graph.ops[i:]]
            if i != len(graph.ops) - 1:
                raise RtlCoverageError(f"layer {op.name}: softmax is only supported as the last layer")
            break
        macs += _macs(op)
        if macs > max_macs:
            raise RtlCoverageError(
                f"layer {op.name}: the model needs {macs:,} multiplications up to here, more than the "
                f"{max_macs:,} the tracer unrolls into one II=1 pipeline (every product becomes its own logic); "
                "such a model does not fit a fully parallel core: use a smaller model or hls4ml's reuse factor"
            )
        x = _OPS[op.kind](x, op)
        last = op
    comb = comb_trace(x_in.ravel(), x.ravel())
    return Traced(comb, inp_op.result, tuple(inp_op.shape), last.result, tuple(last.shape), last.name, uncovered)


# ---- ops ------------------------------------------------------------------------------------------------------
def _weights(op: Op) -> tuple[np.ndarray, np.ndarray, FixedFormat]:
    """Weights and bias on their formats' grids, the bias already assigned to the accumulator."""
    w = op.formats["weight"].cast(op.arrays["weight"])
    b = op.formats["bias"].cast(op.arrays["bias"])
    acc = op.formats["accum"]
    fixed.check_format(acc, f"layer {op.name} accumulator")
    return w, acc.cast(b), acc


def _frac_bits(values: np.ndarray) -> int:
    """Fraction bits needed to hold every value exactly."""
    f = 0
    for v in np.unique(np.abs(values[values != 0])):
        while v * 2.0**f != np.floor(v * 2.0**f):
            f += 1
    return f


def _dot(x: list[FixedVariable], w: np.ndarray, b: np.ndarray, acc: FixedFormat, op: Op) -> list:
    """Columns of `x @ w + b` with hls4ml's accumulator semantics, as symbolic values (before the wrap)."""
    x_f = max(int(v.kif[2]) for v in x if v.low != v.high) if any(v.low != v.high for v in x) else 0
    exact_products = x_f + _frac_bits(w) <= acc.frac
    if acc.saturation != "WRAP":
        _check_no_overflow(x, w, b, acc, op)
    if exact_products:
        # Products fit the accumulator's grid: no per-product rounding, so da4ml may share adders freely.
        # Inputs proven constant (a relu that never fires) are folded into the bias: da4ml's matrix solver
        # must only see true variables.
        live = [i for i, v in enumerate(x) if v.low != v.high]
        bias = [Decimal(repr(float(b[j]))) for j in range(w.shape[1])]
        for i, v in enumerate(x):
            if v.low == v.high and v.low != 0:
                for j in range(w.shape[1]):
                    bias[j] += Decimal(v.low) * Decimal(repr(float(w[i, j])))
        if not live:
            return [FixedVariable.from_const(bj, hwconf=x[0].hwconf) for bj in bias]
        xa = FixedVariableArray(np.array([x[i] for i in live], dtype=object))
        y = xa @ w[live]
        return [variables(y)[j] + bias[j] for j in range(w.shape[1])]
    cols = []
    for j in range(w.shape[1]):
        terms = [fixed.round_var(x[i] * Decimal(repr(float(w[i, j]))), acc.frac, acc.rounding)
                 for i in range(w.shape[0]) if w[i, j] != 0 and not (x[i].low == x[i].high == 0)]
        terms.append(FixedVariable.from_const(Decimal(repr(float(b[j]))), hwconf=x[0].hwconf))
        cols.append(_tree_sum(terms))
    return cols


def _tree_sum(terms: list):
    while len(terms) > 1:
        nxt = [terms[k] + terms[k + 1] for k in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


def _check_no_overflow(x, w, b, acc: FixedFormat, op: Op) -> None:
    """A saturating accumulator depends on the order of additions; it is traced only when no partial sum can
    reach its limits."""
    mag = np.array([max(abs(float(v.low)), abs(float(v.high))) for v in x])
    bound = np.abs(b) + (mag[:, None] * np.abs(w)).sum(axis=0)
    if np.any(bound > acc.max_value) or np.any(-bound < acc.min_value):
        raise RtlCoverageError(
            f"layer {op.name}: its accumulator {acc} saturates and partial sums may reach its limits; the result "
            "then depends on the order of additions. Use a wrapping accumulator or widen it"
        )


def _finish(vals: list, op: Op, shape) -> FixedVariableArray:
    acc = op.formats["accum"]
    arr = FixedVariableArray(np.array(vals, dtype=object).reshape(shape))
    return fixed.cast(fixed.cast(arr, acc, f"layer {op.name} accumulator"), op.result, f"layer {op.name}")


def op_dense(x: FixedVariableArray, op: Op) -> FixedVariableArray:
    w, b, acc = _weights(op)
    w = w.reshape(-1, w.shape[-1])
    xs = list(variables(x).ravel())
    if len(xs) != w.shape[0]:
        raise RtlCoverageError(f"layer {op.name}: {len(xs)} inputs but weights for {w.shape[0]}")
    return _finish(_dot(xs, w, b, acc, op), op, op.shape)


def op_conv(x: FixedVariableArray, op: Op) -> FixedVariableArray:
    w, b, acc = _weights(op)
    kh, kw = op.attrs["kernel"]
    sh, sw = op.attrs["stride"]
    pt, pb, pl, pr = op.attrs["pad"]
    h, wd, c = op.attrs["in_shape"]
    w2 = w.reshape(kh * kw * c, -1)
    grid = variables(x).reshape(h, wd, c)
    zero = FixedVariable.from_const(Decimal(0), hwconf=grid.ravel()[0].hwconf)
    padded = np.full((h + pt + pb, wd + pl + pr, c), zero, dtype=object)
    padded[pt : pt + h, pl : pl + wd, :] = grid
    oh, ow = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    out = []
    for r in range(oh):
        for q in range(ow):
            patch = padded[r * sh : r * sh + kh, q * sw : q * sw + kw, :].ravel()
            out.extend(_dot(list(patch), w2, b, acc, op))
    if oh * ow * w2.shape[1] != int(np.prod(op.shape)):
        raise RtlCoverageError(f"layer {op.name}: traced output {oh}x{ow}x{w2.shape[1]} does not match {op.shape}")
    return _finish(out, op, op.shape)


def op_relu(x: FixedVariableArray, op: Op) -> FixedVariableArray:
    return fixed.cast(x.relu(), op.result, f"layer {op.name}")


def op_linear(x: FixedVariableArray, op: Op) -> FixedVariableArray:
    return fixed.cast(x, op.result, f"layer {op.name}")


def op_batchnorm(x: FixedVariableArray, op: Op) -> FixedVariableArray:
    s = op.formats["scale"].cast(op.arrays["scale"]).ravel()
    b = op.formats["bias"].cast(op.arrays["bias"]).ravel()
    flat = variables(x).ravel()
    n = len(s)
    vals = [flat[k] * Decimal(repr(float(s[k % n]))) + Decimal(repr(float(b[k % n]))) for k in range(len(flat))]
    arr = FixedVariableArray(np.array(vals, dtype=object).reshape(variables(x).shape))
    return fixed.cast(arr, op.result, f"layer {op.name}")


def op_reshape(x: FixedVariableArray, op: Op) -> FixedVariableArray:
    return fixed.cast(x.reshape(*op.shape), op.result, f"layer {op.name}")


def op_maxpool(x: FixedVariableArray, op: Op) -> FixedVariableArray:
    kh, kw = op.attrs["kernel"]
    sh, sw = op.attrs["stride"]
    h, wd, c = op.attrs["in_shape"]
    pt, pb, pl, pr = op.attrs["pad"]
    grid = variables(x).reshape(h, wd, c)
    if any(op.attrs["pad"]):
        # Padded cells hold the input format's most negative value, so they never win unless the window is all pad.
        x_fmt = op.attrs["in_format"]
        lowest = FixedVariable.from_const(Decimal(repr(float(x_fmt.min_value))), hwconf=grid.ravel()[0].hwconf)
        padded = np.full((h + pt + pb, wd + pl + pr, c), lowest, dtype=object)
        padded[pt : pt + h, pl : pl + wd, :] = grid
        grid, h, wd = padded, h + pt + pb, wd + pl + pr
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    out = np.empty((oh, ow, c), dtype=object)
    for r in range(oh):
        for q in range(ow):
            for ch in range(c):
                win = grid[r * sh : r * sh + kh, q * sw : q * sw + kw, ch].ravel()
                m = win[0]
                for v in win[1:]:
                    m = m.max_of(v)
                out[r, q, ch] = m
    arr = FixedVariableArray(out.reshape(op.shape))
    if "accum" in op.attrs:
        arr = fixed.cast(arr, op.attrs["accum"], f"layer {op.name} accumulator")
    return fixed.cast(arr, op.result, f"layer {op.name}")


def op_zeropad(x: FixedVariableArray, op: Op) -> FixedVariableArray:
    pt, pb, pl, pr = op.attrs["pad"]
    h, wd, c = op.attrs["in_shape"]
    grid = variables(fixed.cast(x, op.result, f"layer {op.name}")).reshape(h, wd, c)
    zero = FixedVariable.from_const(Decimal(0), hwconf=grid.ravel()[0].hwconf)
    padded = np.full((h + pt + pb, wd + pl + pr, c), zero, dtype=object)
    padded[pt : pt + h, pl : pl + wd, :] = grid
    return FixedVariableArray(padded.reshape(op.shape))


def _table_lookup(v: FixedVariable, fmt: FixedFormat, n_bits: int, table_raw: np.ndarray, out: FixedFormat):
    """`table[index(v, fmt, n_bits)]` as a ROM: the index is the top `n_bits` of v's `fmt` bit pattern, i.e. v
    truncated and wrapped to an n_bits-wide format with the same integer bits; the ROM holds `out` values."""
    idx_fmt = FixedFormat(n_bits, fmt.integer, fmt.signed, "TRN", "WRAP")
    q = fixed.cast_var(v, idx_fmt)
    values = out.to_float(table_raw)
    mask = (1 << n_bits) - 1

    def rom(xs):
        raw = np.round(np.asarray(xs, dtype=np.float64) * 2.0**idx_fmt.frac).astype(np.int64)
        return values[raw & mask]

    k, i, f = fixed.kif(out)
    arr = FixedVariableArray(np.array([q], dtype=object)).apply(rom).quantize(k, i, f)
    return variables(arr)[0]


def _tree(vals: list, accum: FixedFormat):
    """hls4ml's balanced-tree reduce: left part of 2**floor(log2(n-1)) elements, each sum converted to accum."""
    n = len(vals)
    if n == 1:
        return vals[0]
    if n == 2:
        return fixed.cast_var(vals[0] + vals[1], accum)
    left = 1 << int(np.floor(np.log2(n - 1)))
    return fixed.cast_var(_tree(vals[:left], accum) + _tree(vals[left:], accum), accum)


def op_softmax(x: FixedVariableArray, op: Op) -> FixedVariableArray:
    """hls4ml's table softmax (stable or latency), from the package's own tables: exp ROM, tree sum, inverse
    ROM, one multiplier per output."""
    f = op.formats
    a = op.attrs
    accum, exp_t, inv_t, inv_inp = f["accum"], f["exp_table"], f["inv_table"], f["inv_inp"]
    for k, fm in f.items():
        fixed.check_format(fm, f"layer {op.name} {k}")
    exp_acc = accum.requantize(op.arrays["exp_table"], exp_t.frac)  # the ROM returns values already in accum
    n = a["n_slice"]
    flat = list(variables(x).ravel())
    out = []
    for s0 in range(0, len(flat), n):
        sl = flat[s0 : s0 + n]
        if a["implementation"] == "stable":
            m = sl[0]
            for v in sl[1:]:
                m = m.max_of(v)
            e = [_table_lookup(fixed.cast_var(m - v, f["inp_norm"]), f["inp_norm"], a["n_exp"], exp_acc, accum)
                 for v in sl]
        else:
            e = [_table_lookup(v, f["input"], a["n_exp"], exp_acc, accum) for v in sl]
        s = fixed.cast_var(_tree(e, accum), inv_inp)
        inv = _table_lookup(s, inv_inp, a["n_inv"], op.arrays["inv_table"], inv_t)
        out.extend(fixed.cast_var(ei * inv, op.result) for ei in e)
    return FixedVariableArray(np.array(out, dtype=object).reshape(op.shape))


_OPS = {
    "zeropad": op_zeropad,
    "softmax": op_softmax,
    "dense": op_dense,
    "conv": op_conv,
    "relu": op_relu,
    "linear": op_linear,
    "batchnorm": op_batchnorm,
    "reshape": op_reshape,
    "maxpool": op_maxpool,
}
