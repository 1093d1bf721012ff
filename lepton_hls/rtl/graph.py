"""The fixed-point layer graph the tracer replays: a straight chain of typed ops with their exact formats.

It is read from the package's engine IR (`engine/graph.json` + `weights.npz`, docs/engine-ir.md), which the
build exports from the converted hls4ml model and holds bit-identical to the C simulation: every precision,
rounding and overflow mode is the one the C simulation uses, not one re-derived from QKeras.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from lepton_host import opset
from lepton_host.fixedpoint import FixedFormat

from .errors import RtlCoverageError


@dataclass
class Op:
    name: str
    kind: str  # input | dense | conv | relu | linear | batchnorm | reshape | zeropad | maxpool | softmax
    shape: tuple[int, ...]  # output shape per sample (channels last)
    result: FixedFormat
    attrs: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    formats: dict[str, FixedFormat] = field(default_factory=dict)


@dataclass
class LayerGraph:
    ops: list[Op]

    @property
    def input(self) -> Op:
        return self.ops[0]


# ---- the package's engine IR (docs/engine-ir.md) -------------------------------------------------------------
def load_engine_ir(engine_dir) -> LayerGraph:
    """Read `engine/graph.json` + `engine/weights.npz`: the fixed-point graph the package's own emulator runs."""
    import json
    from pathlib import Path

    d = Path(engine_dir)
    gpath, wpath = d / "graph.json", d / "weights.npz"
    if not gpath.is_file() or not wpath.is_file():
        raise RtlCoverageError(f"{d}: graph.json / weights.npz missing; rebuild the package with `lepton-hls build`")
    g = json.loads(gpath.read_text())
    with np.load(wpath) as z:
        arrays = {k: z[k] for k in z.files}
    return from_engine_ir(g, arrays)


def from_engine_ir(g: dict, arrays: dict[str, np.ndarray]) -> LayerGraph:
    if g.get("io_type", "io_parallel") != "io_parallel":
        raise RtlCoverageError(f"the RTL tracer follows io_parallel models; this package is {g.get('io_type')}")
    ops: list[Op] = []
    prev = None
    for layer in g["layers"]:
        name, kind = layer["name"], layer["op"]
        where = f"layer {name} ({layer.get('class_name', kind)})"
        declared = opset.BY_OP.get(kind)
        if declared is not None and declared.rtl:
            raise RtlCoverageError(f"{where}: {declared.rtl}")
        reader = _READERS.get(kind)
        if reader is None:
            raise RtlCoverageError(f"{where}: op {kind!r} is outside the RTL tracer's coverage")
        ins = layer.get("inputs", [])
        if kind != "input" and (len(ins) != 1 or ins[0] != prev):
            raise RtlCoverageError(f"{where}: the RTL tracer follows single-chain models only (inputs {ins})")
        op = Op(name, kind, tuple(int(s) for s in layer["shape"]), FixedFormat.from_dict(layer["format"]))
        reader(op, layer.get("params", {}), arrays, ops, where)
        ops.append(op)
        prev = name
    if not ops or ops[0].kind != "input":
        raise RtlCoverageError("the engine graph has no input layer")
    return LayerGraph(ops)


# ---- one reader per engine op: the op's params and arrays as the tracer's Op ---------------------------------
def _read_input(op: Op, p: dict, arrays: dict, ops: list, where: str) -> None:
    pass


def _read_mac(op: Op, p: dict, arrays: dict, ops: list, where: str) -> None:
    if p.get("product", "mult") != "mult":
        raise RtlCoverageError(f"{where}: {p.get('product')} (power-of-two) weights are outside the RTL tracer's coverage")
    ir_op, name = op.kind, op.name
    op.kind = "dense" if ir_op == "dense" else "conv"
    op.formats = {k: FixedFormat.from_dict(p[k]) for k in ("weight", "bias", "accum")}
    op.arrays = {
        "weight": op.formats["weight"].to_float(arrays[f"{name}/kernel"]),
        "bias": op.formats["bias"].to_float(arrays[f"{name}/bias"]),
    }
    if ir_op != "dense":
        op.attrs = {
            "kernel": (p["filt_height"], p["filt_width"]),
            "stride": (p["stride_height"], p["stride_width"]),
            "pad": (p["pad_top"], p["pad_bottom"], p["pad_left"], p["pad_right"]),
            "in_shape": (p["in_height"], p["in_width"], p["n_chan"]),
        }


def _read_activation(op: Op, p: dict, arrays: dict, ops: list, where: str) -> None:
    fn = p.get("function")
    if fn not in ("relu", "linear"):
        raise RtlCoverageError(f"{where}: activation {fn!r} is outside the RTL tracer's coverage (relu, linear)")
    op.kind = fn


def _read_batchnorm(op: Op, p: dict, arrays: dict, ops: list, where: str) -> None:
    op.formats = {k: FixedFormat.from_dict(p[k]) for k in ("scale", "bias")}
    op.arrays = {k: op.formats[k].to_float(arrays[f"{op.name}/{k}"]) for k in ("scale", "bias")}


def _read_pool(op: Op, p: dict, arrays: dict, ops: list, where: str) -> None:
    if p["mode"] != "max":
        raise RtlCoverageError(
            f"{where}: {p['mode']} pooling divides by the window size (truncating toward zero); only max "
            "pooling is in the RTL tracer's coverage"
        )
    op.kind = "maxpool"
    op.attrs = {
        "kernel": (p["pool_height"], p["pool_width"]),
        "stride": (p["stride_height"], p["stride_width"]),
        "pad": (p["pad_top"], p["pad_bottom"], p["pad_left"], p["pad_right"]),
        "in_shape": (p["in_height"], p["in_width"], p["n_filt"]),
        "accum": FixedFormat.from_dict(p["accum"]),
        "in_format": ops[-1].result,
    }


def _read_reshape(op: Op, p: dict, arrays: dict, ops: list, where: str) -> None:
    pass


def _read_zeropad(op: Op, p: dict, arrays: dict, ops: list, where: str) -> None:
    op.attrs = {
        "pad": (p["pad_top"], p["pad_bottom"], p["pad_left"], p["pad_right"]),
        "in_shape": (p["in_height"], p["in_width"], p["n_chan"]),
    }


def _read_softmax(op: Op, p: dict, arrays: dict, ops: list, where: str) -> None:
    name = op.name
    if p.get("implementation") in ("stable", "latency") and f"{name}/exp_table" in arrays:
        names = ["accum", "exp_table", "inv_table", "inv_inp"] + (["inp_norm"] if p["implementation"] == "stable" else [])
        op.formats = {k: FixedFormat.from_dict(p[k]) for k in names}
        op.formats["input"] = ops[-1].result
        op.attrs = {
            "implementation": p["implementation"],
            "n_slice": int(p["n_slice"]),
            "n_exp": int(p["exp_table_size"]).bit_length() - 1,
            "n_inv": int(p["inv_table_size"]).bit_length() - 1,
        }
        op.arrays = {k: np.asarray(arrays[f"{name}/{k}"], dtype=np.int64) for k in ("exp_table", "inv_table")}


# Engine ops the tracer follows; every other opset op names its reason in `OpKind.rtl`.
_READERS = {
    "input": _read_input,
    "dense": _read_mac,
    "conv1d": _read_mac,
    "conv2d": _read_mac,
    "activation": _read_activation,
    "batchnorm": _read_batchnorm,
    "pool1d": _read_pool,
    "pool2d": _read_pool,
    "reshape": _read_reshape,
    "zeropad": _read_zeropad,
    "softmax": _read_softmax,
}
