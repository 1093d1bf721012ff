"""The engine's compiled plan: the graph turned once into a flat list of numpy calls on preallocated buffers.

`Engine.run_raw_reference` interprets the IR node by node and allocates every intermediate; for a small network
at batch 1 that bookkeeping costs more than the arithmetic. A `Plan` decides once, per node, how it runs, and
binds that decision per batch size to buffers it keeps (a few batch sizes per thread), so a call is a loop over
`functools.partial` objects with `out=` arguments that allocates nothing but the answer.

What is specialised, and why it stays bit-exact (docs/engine-ir.md, "The compiled plan"):

- Values live as int64 raw integers ("int") or as float64 holding the same raw integers exactly ("float").
- `dense`, and `conv1d`/`conv2d` with fewer than 8 input channels, whose products are plain and whose
  accumulator provably neither rounds nor wraps, run as one float64 matrix product. The product already includes
  the bias, the scaling to the result's grid and the rounding's half LSB (powers of two and half LSBs only).
  Every partial sum, in units of the result's LSB before rounding, is an integer below 2**53 (a bound proven per
  layer from the input's bounds, |weights| and |bias|), so BLAS computes it exactly in any order. Rounding is then
  one `floor`/`rint`/`trunc`/`ceil`. Relu and any saturation the bounds cannot rule out are clamps at integers,
  which commute with those roundings. A following relu/linear activation is fused the same way. The bias rides
  on a column of ones kept beside the input in the producer's buffer.
- The input quantization (raw floats -> ap_fixed) runs in float64 with `FixedFormat.quantize`'s own operations,
  and its WRAP as one exact `mod` (formats up to 52 bits), skipped when the batch is inside the format.
- Unpadded, non-overlapping max pooling runs on the float values (max is exact).
- `softmax` runs its table lookups and conversions in place. Its balanced-tree sum is a plain sum where the
  table's bounds prove no partial sum saturates. The stable variant's exp lookup is one direct table over
  every possible difference, computed by the interpreter's own arithmetic.
- Every other node, and every node whose proof fails, calls the node's own function (`_Node.fn`), the same code
  the interpreter runs, and its result is copied into the plan's buffer.

This module compiles and binds; the stages themselves, one class per way a node runs, are in
engine_plan_stages.py.
"""

from __future__ import annotations

import threading

import numpy as np

from .engine_plan_stages import (
    FLOAT,
    INT,
    _ActivationFloat,
    _Alias,
    _Cast,
    _Generic,
    _InputFloat,
    _InputInt,
    _Linear,
    _MaxPoolFloat,
    _Softmax,
    _Values,
)

MAX_BATCH_SIZES = 4  # bound batch sizes a thread keeps buffers for (the oldest is dropped first)


class Plan:
    """The compiled form of an `Engine`, for whole-network runs: `run_raw(raw)` (raw integers in and out) and
    `predict(x)` (model-domain floats in, the output's real values out, the input quantized as the C simulation's
    double -> ap_fixed conversion does). Each call returns a new array; the plan's buffers never leave it."""

    def __init__(self, engine):
        self._engine = engine
        self._compiled: dict[str, _Compiled] = {}  # by mode ("raw" or "float"), compiled on first use
        self._local = threading.local()  # buffers are per thread: a served engine may be called concurrently

    def run_raw(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.int64)
        return self._chunked("raw", raw, np.int64)

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype not in (np.float64, np.float32):
            x = x.astype(np.float64)  # what FixedFormat.quantize does first
        return self._chunked("float", x, np.float64)

    def _chunked(self, mode: str, x: np.ndarray, dtype) -> np.ndarray:
        n, step = len(x), max(1, self._engine.chunk)
        if n == 0:
            return np.empty((0,) + self._engine.output_shape, dtype=dtype)
        if n <= step:
            return self._bound(mode, n).run(x, None)
        out = np.empty((n,) + self._engine.output_shape, dtype=dtype)
        for i in range(0, n, step):
            part = x[i : i + step]
            self._bound(mode, len(part)).run(part, out[i : i + step])
        return out

    def _bound(self, mode: str, n: int) -> _Bound:
        plans = getattr(self._local, "plans", None)
        if plans is None:
            plans = self._local.plans = {}
        b = plans.get((mode, n))
        if b is None:
            compiled = self._compiled.get(mode)
            if compiled is None:
                compiled = self._compiled[mode] = _plan_for(self._engine, mode)
            if len(plans) >= MAX_BATCH_SIZES:
                del plans[next(iter(plans))]
            b = plans[(mode, n)] = _Bound(compiled, self._engine, n, mode == "raw")
        return b


# ---- compilation (batch-size independent) ---------------------------------------------------------------
class _Compiled:
    """The stages of one mode, in order, and the kind each node's value is kept in."""

    def __init__(self, stages, kinds, out_id):
        self.stages, self.kinds, self.out_id = stages, kinds, out_id


def _plan_for(engine, mode: str) -> _Compiled:
    nodes = engine.nodes
    consumers: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for j in node.inputs:
            consumers[j].append(i)
    out_id = engine.output_ids[0]

    # Each node's stage and the kind its value is produced in; the input's stage first (it reads nothing), since a
    # call feeds it.
    stages: list[object] = []
    kinds: dict[int, str] = {}
    fused: set[int] = set()
    order = engine.input_ids + [i for i in range(len(nodes)) if i not in engine.input_ids]
    for i in order:
        node = nodes[i]
        if i in fused:
            continue
        stage = None
        if node.op == "input":
            stage = _InputFloat.make(i, node) if mode == "float" else None
            stage = stage or _InputInt(i, node, mode)
        elif node.op == "reshape":
            stage = _Alias(i, node.inputs[0], kinds[node.inputs[0]])
        elif node.op in ("dense", "conv1d", "conv2d"):
            act = _fusable_activation(nodes, consumers, i, out_id)
            stage = _Linear.make(i, node, nodes, act)
            if stage is not None and act is not None:
                fused.add(act)
        elif node.op == "activation":
            stage = _ActivationFloat.make(i, node, nodes[node.inputs[0]], kinds[node.inputs[0]])
        elif node.op in ("pool1d", "pool2d"):
            stage = _MaxPoolFloat.make(i, node, nodes[node.inputs[0]])
        elif node.op == "softmax":
            stage = _Softmax.make(i, node, nodes[node.inputs[0]], kinds[node.inputs[0]])
        stage = stage or _Generic(i, node)
        kinds[stage.out] = stage.kind
        stages.append(stage)

    # Casts where a consumer wants the other kind, placed right after the value they cast.
    wanted: dict[tuple[int, str], None] = {}
    for stage in stages:
        for j in stage.reads():
            wanted[(j, stage.wants)] = None
    ordered = []
    for stage in stages:
        ordered.append(stage)
        for kind in (INT, FLOAT):
            if (stage.out, kind) in wanted and kinds[stage.out] != kind:
                ordered.append(_Cast(stage.out, kind))
    return _Compiled(ordered, kinds, out_id)


def _fusable_activation(nodes, consumers, i: int, out_id: int) -> int | None:
    """The relu/linear activation that is node i's only reader, when i itself is not the graph's output."""
    if i == out_id or len(consumers[i]) != 1:
        return None
    a = consumers[i][0]
    node = nodes[a]
    if node.op == "activation" and node.parts.get("function") in ("relu", "linear"):
        return a
    return None


# ---- binding (per batch size) ---------------------------------------------------------------------------
class _Bound:
    """One mode's stages bound to buffers for batch size n: `run(x, into)`."""

    def __init__(self, compiled: _Compiled, engine, n: int, raw: bool):
        ones = _buffer_owners(compiled.stages, {s.src for s in compiled.stages if s.ones})
        vals = _Values(n, engine.nodes, ones)
        steps = []
        for stage in compiled.stages:
            steps += stage.bind(n, vals)
        self._first, self._rest = steps[0], tuple(steps[1:])
        out_id = compiled.out_id
        kind = compiled.kinds[out_id]
        self._out = vals.views[(out_id, kind)]
        self._float_out = kind == FLOAT
        self._raw = raw
        self._step = engine.output_node.format.step  # 2**-frac: exact scaling to real values

    def run(self, x: np.ndarray, into: np.ndarray | None):
        self._first(x)
        for step in self._rest:
            step()
        out = self._out
        if into is None:
            if self._raw:
                return out.astype(np.int64)  # a copy: the buffer stays the plan's
            res = np.multiply(out, self._step)
            if self._float_out:
                np.add(res, 0.0, out=res)  # -0.0 from a float rounding reads as +0.0, as the integer path gives
            return res
        if into.dtype == np.int64:
            np.copyto(into, out, casting="unsafe")
        else:
            np.multiply(out, self._step, out=into)
            if self._float_out:
                np.add(into, 0.0, out=into)
        return into


def _buffer_owners(stages, ids: set[int]) -> set[int]:
    """The nodes whose float buffers hold the float values of `ids`: a reshape of a float value shares its
    source's buffer; a reshape of an int value gets its own (through its cast)."""
    src = {s.out: s.src for s in stages if isinstance(s, _Alias) and s.kind == FLOAT}
    owners = set()
    for i in ids:
        while i in src:
            i = src[i]
        owners.add(i)
    return owners
