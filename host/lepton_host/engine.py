"""The fast bit-exact engine: evaluates the engine IR (docs/engine-ir.md) on whole batches of raw integers.

Every value is a raw two's-complement integer in int64 and every assignment goes through
`FixedFormat.requantize`/`overflow`, so the arithmetic is ap_fixed's. Matrix products run in float64 BLAS
where a per-layer bound proves every partial sum stays below 2**53 (then float64 is exact); otherwise in int64,
which wraps modulo 2**64 and is therefore still exact for accumulators with WRAP overflow.

This module interprets the graph node by node (`run_raw_reference`); whole-network runs (`run_raw`, `predict`)
go through the plan compiled from it once (engine_plan.py), which is tested against this interpreter.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import engine_merge
from .errors import EmulationError
from .engine_ops import _Convert, _fmt, _Mac, _top_bits, _windows
from .fixedpoint import FixedFormat

IR_SCHEMA = "lepton-hls/engine"
IR_VERSION = 1
GRAPH_NAME = "graph.json"
WEIGHTS_NAME = "weights.npz"
CHUNK_ELEMENTS = 1 << 18  # per-chunk working set (int64 elements) of the widest layer

Op = Callable[[list[np.ndarray]], np.ndarray]


@dataclass
class _Node:
    name: str
    op: str
    inputs: list[int]
    shape: tuple[int, ...]
    format: FixedFormat
    fn: Op
    work: int  # int64 elements per sample this node touches at its widest
    lo: int = 0  # proven bounds of the node's raw output values
    hi: int = 0
    parts: dict = field(default_factory=dict)  # what the compiled plan (engine_plan.py) specialises on


class Engine:
    """A loaded engine graph; `run_raw` maps raw input integers (N, *shape) to raw outputs."""

    def __init__(self, graph: dict, arrays: dict[str, np.ndarray]):
        if graph.get("schema") != IR_SCHEMA or graph.get("version") != IR_VERSION:
            raise EmulationError(
                f"engine graph schema {graph.get('schema')!r} v{graph.get('version')!r} is not "
                f"{IR_SCHEMA!r} v{IR_VERSION}; rebuild the package"
            )
        self.graph = graph
        self.nodes: list[_Node] = []
        index: dict[str, int] = {}
        for layer in graph["layers"]:
            try:
                node = _build(layer, [self.nodes[index[n]] for n in layer["inputs"]], arrays)
            except KeyError as e:
                raise EmulationError(f"engine layer {layer.get('name')!r}: missing {e} in graph or weights") from None
            node.inputs = [index[n] for n in layer["inputs"]]
            index[node.name] = len(self.nodes)
            self.nodes.append(node)
        self.input_ids = [index[n] for n in graph["inputs"]]
        self.output_ids = [index[n] for n in graph["outputs"]]
        if len(self.input_ids) != 1 or len(self.output_ids) != 1:
            raise EmulationError("the engine runs single-input, single-output models only")
        self.input_node = self.nodes[self.input_ids[0]]
        self.output_node = self.nodes[self.output_ids[0]]
        work = max(n.work for n in self.nodes)
        self.chunk = max(1, CHUNK_ELEMENTS // max(work, 1))
        # What the loop in `_run` needs, flat: each node's function and the value slots it reads. The input node
        # reads slot `len(nodes)`, where a run puts the raw batch it was given.
        feed = len(self.nodes)
        self._steps = [(n.fn, tuple(n.inputs) if n.op != "input" else (feed,)) for n in self.nodes]
        self._index = index
        self._plan = None  # compiled on first use (engine_plan.Plan)

    @classmethod
    def load(cls, engine_dir: str | os.PathLike) -> Engine:
        d = Path(engine_dir)
        graph_path, weights_path = d / GRAPH_NAME, d / WEIGHTS_NAME
        for p in (graph_path, weights_path):
            if not p.is_file():
                raise EmulationError(f"{p} is missing; rebuild the package with `lepton-hls build`")
        try:
            graph = json.loads(graph_path.read_text())
        except json.JSONDecodeError as e:
            raise EmulationError(f"{graph_path} is not valid JSON: {e}") from None
        with np.load(weights_path) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(graph, arrays)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input_node.shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.output_node.shape

    @property
    def plan(self):
        """The compiled plan (engine_plan.py) that whole-network runs use."""
        if self._plan is None:
            from .engine_plan import Plan

            self._plan = Plan(self)
        return self._plan

    def predict(self, x) -> np.ndarray:
        """Model-domain floats (N, *input_shape) -> the output's real values (float64), the input quantized as
        `FixedFormat.quantize` (the C simulation's double -> ap_fixed conversion) does: `run_raw` between the
        input's quantization and the output's scaling, fused into one compiled call."""
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape:
            raise EmulationError(f"engine input of shape {x.shape}; expected (N, {self.input_shape})")
        return self.plan.predict(x)

    def run_raw(self, raw: np.ndarray, trace: bool = False, after: str | None = None):
        """Raw input integers (N, *input_shape) -> raw output integers (N, *output_shape); with `trace`, a dict
        of every layer's raw output by layer name.

        With `after`, `raw` is the raw output (N, *shape) of layer `after`, computed elsewhere (the RTL core
        covers the network up to there), and only the layers after it run; `trace` then holds `after` and the
        layers after it.

        Whole-network runs without `trace` go through the compiled plan; the others, and `run_raw_reference`,
        interpret the graph node by node (the definition the plan is tested against)."""
        raw = np.asarray(raw, dtype=np.int64)
        if not trace and after is None:
            if raw.shape[1:] != self.input_shape:
                raise EmulationError(f"engine input of shape {raw.shape}; expected (N, {self.input_shape})")
            return self.plan.run_raw(raw)
        return self.run_raw_reference(raw, trace, after)

    def run_raw_reference(self, raw: np.ndarray, trace: bool = False, after: str | None = None):
        """`run_raw` by interpreting the graph node by node, each node's function allocating its result."""
        raw = np.asarray(raw, dtype=np.int64)
        if after is None:
            slot, first = len(self.nodes), 0
            if raw.shape[1:] != self.input_shape:
                raise EmulationError(f"engine input of shape {raw.shape}; expected (N, {self.input_shape})")
        else:
            slot = first = self.tail_start(after)
            first += 1
            if raw.shape[1:] != self.nodes[slot].shape:
                raise EmulationError(
                    f"engine input of shape {raw.shape} after layer {after!r}; expected (N, {self.nodes[slot].shape})"
                )
        n = len(raw)
        if n <= self.chunk:
            return self._run(raw, slot, first, trace)
        parts = [self._run(raw[i : i + self.chunk], slot, first, trace) for i in range(0, n, self.chunk)]
        if trace:
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return np.concatenate(parts)

    def tail_start(self, layer: str) -> int:
        """The index of node `layer`, checked as a place to continue from: every node after it reads only
        `layer` or nodes after it, so `run_raw(..., after=layer)` needs nothing but `layer`'s output."""
        i = self._index.get(layer)
        if i is None:
            raise EmulationError(f"the engine graph has no layer {layer!r}")
        names = [node.name for node in self.nodes] + ["the graph input"]
        for node, (_, args) in zip(self.nodes[i + 1 :], self._steps[i + 1 :]):
            early = [names[j] for j in args if j < i or j == len(self.nodes)]
            if early:
                raise EmulationError(
                    f"engine layer {node.name!r} after {layer!r} reads {', '.join(map(repr, early))}, computed "
                    f"before it; the engine cannot continue from {layer!r} alone"
                )
        return i

    def _run(self, raw: np.ndarray, slot: int, first: int, trace: bool):
        """Puts `raw` in value slot `slot`, then runs nodes `first`, `first + 1`, ... to the end."""
        steps = self._steps
        values: list[np.ndarray | None] = [None] * (len(steps) + 1)
        values[slot] = raw
        for i in range(first, len(steps)):
            fn, args = steps[i]
            values[i] = fn([values[j] for j in args])
        if trace:  # every layer that ran, and the one whose output was given
            return {node.name: v for node, v in zip(self.nodes, values) if v is not None}
        return values[self.output_ids[0]]


# ---- layer builders ---------------------------------------------------------------------------------------
def _build(layer: dict, ins: list[_Node], arrays: dict) -> _Node:
    op = layer["op"]
    builder = _BUILDERS.get(op)
    if builder is None:
        raise EmulationError(
            f"engine layer {layer['name']!r}: op {op!r} is unknown to this runtime "
            f"(knows {', '.join(sorted(_BUILDERS))}); upgrade lepton-hls or rebuild the package"
        )
    shape = tuple(int(s) for s in layer["shape"])
    fmt = _fmt(layer["format"])
    built = builder(layer, layer["params"], ins, fmt, arrays)
    fn, work = built[0], built[1]
    lo, hi = built[2] if len(built) > 2 else (fmt.raw_min, fmt.raw_max)
    parts = built[3] if len(built) > 3 else {}
    return _Node(layer["name"], op, [], shape, fmt, fn, max(work, int(np.prod(shape))), int(lo), int(hi), parts)


def _input(layer, p, ins, fmt, arrays):
    return (lambda xs: fmt.overflow(xs[0])), 0


def _reshape(layer, p, ins, fmt, arrays):
    shape = tuple(int(s) for s in layer["shape"])
    return (lambda xs: xs[0].reshape((len(xs[0]),) + shape)), 0, (ins[0].lo, ins[0].hi)


def _zeropad(layer, p, ins, fmt, arrays):
    conv = _Convert(ins[0].format.frac, fmt, min(ins[0].lo, 0), max(ins[0].hi, 0))
    ih, iw, ch = int(p["in_height"]), int(p["in_width"]), int(p["n_chan"])
    pads = ((0, 0), (int(p["pad_top"]), int(p["pad_bottom"])), (int(p["pad_left"]), int(p["pad_right"])), (0, 0))
    shape = tuple(int(s) for s in layer["shape"])

    def fn(xs):
        x = conv(xs[0]).reshape(len(xs[0]), ih, iw, ch)
        return np.pad(x, pads).reshape((len(x),) + shape)

    return fn, 0, conv.bounds


def _activation(layer, p, ins, fmt, arrays):
    x = ins[0]
    fn = p["function"]
    if fn == "linear":
        conv = _Convert(x.format.frac, fmt, x.lo, x.hi)
        return (lambda xs: conv(xs[0])), 0, conv.bounds, {"function": fn, "convert": conv}
    if fn == "relu":
        # relu(x) converted == conversion of max(x, 0): zero converts to zero in every format.
        conv = _Convert(x.format.frac, fmt, max(x.lo, 0), max(x.hi, 0))
        return (lambda xs: conv(np.maximum(xs[0], 0))), 0, conv.bounds, {"function": fn, "convert": conv}
    raise EmulationError(f"engine layer {layer['name']!r}: activation {fn!r} is not supported")


def _lookup(layer, p, ins, fmt, arrays):
    name = layer["name"]
    starts = arrays[f"{name}/starts"].astype(np.int64)
    values = arrays[f"{name}/values"].astype(np.int64)
    if values.ndim != 2 or len(values) != len(starts) or not len(starts):
        raise EmulationError(f"engine layer {name!r}: lookup table arrays do not match ({starts.shape}, {values.shape})")
    period = values.shape[1]
    col = values[:, 0]

    def fn(xs):
        x = xs[0]
        flat = x.reshape(len(x), -1)
        seg = np.searchsorted(starts, flat, side="right")
        seg -= 1
        np.maximum(seg, 0, out=seg)  # below the proven input range cannot happen; never index from the end
        if period == 1:
            return col[seg].reshape(x.shape)
        return values[seg, np.arange(flat.shape[1]) % period].reshape(x.shape)

    return fn, 0, (int(values.min()), int(values.max()))


def _batchnorm(layer, p, ins, fmt, arrays):
    name, fx = layer["name"], ins[0].format.frac
    sf, bf = _fmt(p["scale"]), _fmt(p["bias"])
    n_filt = int(p["n_filt"])
    s, b = arrays[f"{name}/scale"].astype(np.int64), arrays[f"{name}/bias"].astype(np.int64)
    frac = max(fx + sf.frac, bf.frac)
    s_shift, b_sh = frac - fx - sf.frac, b << (frac - bf.frac)

    def fn(xs):
        x = xs[0]
        flat = x.reshape(len(x), -1, n_filt)
        v = ((flat * s) << s_shift) + b_sh
        return fmt.requantize(v, frac).reshape(x.shape)

    return fn, 0


def _dense(layer, p, ins, fmt, arrays):
    mac = _Mac(layer, p, ins[0].format, arrays, ins[0].lo, ins[0].hi)
    conv = _Convert(mac.accum.frac, fmt, *mac.bounds)
    n_out = mac.n_out

    def fn(xs):
        x = xs[0]
        lead = x.shape[:-1]
        return conv(mac(x.reshape(-1, x.shape[-1]))).reshape(lead + (n_out,))

    return fn, mac.work, conv.bounds, {"mac": mac, "convert": conv}


def _conv(layer, p, ins, fmt, arrays):
    padded = any(int(p[k]) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right"))
    x_lo, x_hi = (min(ins[0].lo, 0), max(ins[0].hi, 0)) if padded else (ins[0].lo, ins[0].hi)
    mac = _Mac(layer, p, ins[0].format, arrays, x_lo, x_hi)
    conv = _Convert(mac.accum.frac, fmt, *mac.bounds)
    as_float = mac.linear and mac.use_float
    sh, sw = int(p["stride_height"]), int(p["stride_width"])
    pads = ((0, 0), (int(p["pad_top"]), int(p["pad_bottom"])), (int(p["pad_left"]), int(p["pad_right"])), (0, 0))
    ih, iw, ch = int(p["in_height"]), int(p["in_width"]), int(p["n_chan"])
    kh, kw, nf = int(p["filt_height"]), int(p["filt_width"]), int(p["n_filt"])
    oh, ow = int(p["out_height"]), int(p["out_width"])
    out_shape = tuple(int(s) for s in layer["shape"])

    def fn(xs):
        x = xs[0]
        n = len(x)
        if as_float:
            xf = x.astype(mac.ftype).reshape(n, ih, iw, ch)
            if padded:
                xf = np.pad(xf, pads)
            views = [
                xf[:, a : a + (oh - 1) * sh + 1 : sh, b : b + (ow - 1) * sw + 1 : sw, :]
                for a in range(kh)
                for b in range(kw)
            ]
            if ch < 8:
                # Few channels: im2col from the per-offset views, concatenated in the kernel's (kh, kw, c) row
                # order, and one matrix product.
                s = np.concatenate(views, axis=-1).reshape(n * oh * ow, kh * kw * ch) @ mac.wf
            else:
                # Many channels: one product per kernel offset, summed (every partial sum obeys the same bound).
                s = np.zeros((n, oh, ow, nf), dtype=mac.ftype)
                for k, view in enumerate(views):
                    s += view @ w_off[k]
                s = s.reshape(n * oh * ow, nf)
            return conv(mac.finish(s.astype(np.int64))).reshape((n,) + out_shape)
        win = _windows(x.reshape(n, ih, iw, ch), p, kh, kw, 0)
        cols = win.reshape(n * oh * ow, kh * kw * ch)
        return conv(mac(cols)).reshape((n,) + out_shape)

    w_off = mac.wf.reshape(kh * kw, ch, nf) if as_float else None
    if as_float:
        work = ih * iw * ch + oh * ow * ((kh * kw * ch if ch < 8 else 0) + 2 * nf)
    else:
        work = oh * ow * (kh * kw * ch + nf + mac.work)
    geometry = {"ih": ih, "iw": iw, "ch": ch, "kh": kh, "kw": kw, "oh": oh, "ow": ow, "sh": sh, "sw": sw,
                "pads": (pads[1][0], pads[1][1], pads[2][0], pads[2][1])}
    return fn, work, conv.bounds, {"mac": mac, "convert": conv, "geometry": geometry, "x_bounds": (x_lo, x_hi)}


def _pool(layer, p, ins, fmt, arrays):
    x_fmt = ins[0].format
    accum = _fmt(p["accum"])
    ih, iw, nf = int(p["in_height"]), int(p["in_width"]), int(p["n_filt"])
    ph, pw = int(p["pool_height"]), int(p["pool_width"])
    oh, ow = int(p["out_height"]), int(p["out_width"])
    out_shape = tuple(int(s) for s in layer["shape"])
    mode = p["mode"]
    # hls4ml pads max pooling with the input type's top bit set: the most negative value of a signed type,
    # but 2**(width-1) raw (half the range, positive) of an unsigned one.
    pad = x_fmt.raw_min if x_fmt.signed else 1 << (x_fmt.width - 1)
    if mode == "max":
        padded = any(int(p[k]) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right"))
        lo, hi = (min(ins[0].lo, pad), max(ins[0].hi, pad)) if padded else (ins[0].lo, ins[0].hi)
        to_accum = _Convert(x_fmt.frac, accum, lo, hi)
        to_result = _Convert(accum.frac, fmt, *to_accum.bounds)
        tiles = not padded and (int(p["stride_height"]), int(p["stride_width"])) == (ph, pw)

        def fn(xs):
            x = xs[0]
            n = len(x)
            if tiles:  # non-overlapping, unpadded windows: a reshape instead of a window view
                m = x.reshape(n, ih, iw, nf)[:, : oh * ph, : ow * pw].reshape(n, oh, ph, ow, pw, nf).max(axis=(2, 4))
            else:
                m = _windows(x.reshape(n, ih, iw, nf), p, ph, pw, pad).max(axis=(3, 4))
            return to_result(to_accum(m)).reshape((n,) + out_shape)

        geometry = {"ih": ih, "iw": iw, "nf": nf, "ph": ph, "pw": pw, "oh": oh, "ow": ow}
        parts = {"mode": mode, "tiles": tiles, "to_accum": to_accum, "to_result": to_result, "geometry": geometry}
        return fn, oh * ow * nf * ph * pw, to_result.bounds, parts
    if mode != "average":
        raise EmulationError(f"engine layer {layer['name']!r}: pooling mode {mode!r} is not supported")
    if p.get("count_pad"):
        count = np.full((oh, ow), ph * pw, dtype=np.int64)
    else:
        ones = np.ones((1, ih, iw, 1), dtype=np.int64)
        count = _windows(ones, p, ph, pw, 0).sum(axis=(3, 4, 5))[0]
    count = count[None, :, :, None]
    frac = max(accum.frac, x_fmt.frac)

    def fn(xs):
        x = xs[0]
        n = len(x)
        win = _windows(x.reshape(n, ih, iw, nf), p, ph, pw, 0)
        s = np.zeros((n, oh, ow, nf), dtype=np.int64)
        for a in range(ph):
            for b in range(pw):
                total = (s << (frac - accum.frac)) + (win[:, :, :, a, b, :] << (frac - x_fmt.frac))
                s = accum.requantize(total, frac)
        q = np.where(s >= 0, s // count, -((-s) // count))
        return fmt.requantize(q, accum.frac).reshape((n,) + out_shape)

    return fn, oh * ow * nf * ph * pw


def _tree_sum(e: np.ndarray, accum: FixedFormat) -> np.ndarray:
    """hls4ml's balanced-tree `reduce` with Op_add over the last axis, each sum converted to `accum`."""
    n = e.shape[-1]
    if n == 1:
        return e[..., 0]
    if n == 2:
        return accum.overflow(e[..., 0] + e[..., 1])
    left = 1 << int(np.floor(np.log2(n - 1))) if n > 1 else 0
    return accum.overflow(_tree_sum(e[..., :left], accum) + _tree_sum(e[..., left:], accum))


def _softmax(layer, p, ins, fmt, arrays):
    name = layer["name"]
    x_fmt = ins[0].format
    impl = p["implementation"]
    n_slice = int(p["n_slice"])
    accum, exp_t, inv_t, inv_inp = (_fmt(p[k]) for k in ("accum", "exp_table", "inv_table", "inv_inp"))
    n_exp = int(p["exp_table_size"]).bit_length() - 1
    n_inv = int(p["inv_table_size"]).bit_length() - 1
    exp_table = accum.requantize(arrays[f"{name}/exp_table"].astype(np.int64), exp_t.frac)
    inv_table = arrays[f"{name}/inv_table"].astype(np.int64)
    norm = _fmt(p["inp_norm"]) if impl == "stable" else None
    if impl not in ("stable", "latency"):
        raise EmulationError(f"engine layer {name!r}: softmax implementation {impl!r} is not supported")
    prod_frac = accum.frac + inv_t.frac

    def fn(xs):
        x = xs[0]
        shape = x.shape
        x = x.reshape(-1, n_slice)
        if impl == "stable":
            d = norm.requantize(x.max(axis=1, keepdims=True) - x, x_fmt.frac)
            e = exp_table[_top_bits(d, norm, n_exp)]
        else:
            e = exp_table[_top_bits(x, x_fmt, n_exp)]
        s = inv_inp.requantize(_tree_sum(e, accum), accum.frac)
        v = inv_table[_top_bits(s, inv_inp, n_inv)]
        return fmt.requantize(e * v[:, None], prod_frac).reshape(shape)

    parts = {"implementation": impl, "n_slice": n_slice, "n_exp": n_exp, "n_inv": n_inv, "exp_table": exp_table,
             "inv_table": inv_table, "accum": accum, "inv_inp": inv_inp, "inp_norm": norm, "prod_frac": prod_frac}
    return fn, 0, (fmt.raw_min, fmt.raw_max), parts


_BUILDERS = {
    "input": _input,
    "reshape": _reshape,
    "zeropad": _zeropad,
    "activation": _activation,
    "lookup": _lookup,
    "batchnorm": _batchnorm,
    "dense": _dense,
    "conv1d": _conv,
    "conv2d": _conv,
    "pool1d": _pool,
    "pool2d": _pool,
    "softmax": _softmax,
    "merge": engine_merge.merge,
    "concatenate": engine_merge.concatenate,
    "dot": engine_merge.dot,
    "clone": engine_merge.clone,
}

# Spatial layers and depthwise convolutions (engine_spatial.py) build on the classes above.
from .engine_spatial import BUILDERS as _SPATIAL_BUILDERS  # noqa: E402

_BUILDERS.update(_SPATIAL_BUILDERS)
