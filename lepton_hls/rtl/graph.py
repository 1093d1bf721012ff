"""The fixed-point layer graph the tracer replays: a straight chain of typed ops with their exact formats.

It is read from the converted hls4ml model (the same objects the C simulation is generated from), so every
precision, rounding and overflow mode is the one the C simulation uses, not one re-derived from QKeras.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from lepton_host.fixedpoint import FixedFormat

from .errors import RtlCoverageError

# Layers the tracer reproduces bit for bit; anything else stops tracing with a clear error.
COVERED = {
    "Input", "Dense", "Activation", "ReLU", "BatchNormalization", "Reshape", "Flatten", "Transpose",
    "Conv1D", "Conv2D", "Pooling1D", "Pooling2D", "Softmax",
}
# Layers that end the traced region: the RTL covers everything before them, and says so.
TAIL_ONLY = {"Softmax"}


@dataclass
class Op:
    name: str
    kind: str  # input | dense | conv | relu | linear | batchnorm | reshape | maxpool | softmax
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


def _fmt(precision, where: str) -> FixedFormat:
    try:
        return FixedFormat.parse(str(precision))
    except Exception as e:  # noqa: BLE001 - any unreadable precision is a coverage problem
        raise RtlCoverageError(f"{where}: precision {precision} is not a fixed-point type the tracer knows ({e})")


def from_hls_model(hls_model) -> LayerGraph:
    """Read the chain of layers of a converted hls4ml `ModelGraph` (io_parallel)."""
    io_type = hls_model.config.get_config_value("IOType")
    if io_type != "io_parallel":
        raise RtlCoverageError(f"the RTL tracer follows io_parallel models; this one was converted with {io_type}")
    ops: list[Op] = []
    for layer in hls_model.get_layers():
        cls = layer.class_name
        where = f"layer {layer.name} ({cls})"
        if cls not in COVERED:
            raise RtlCoverageError(
                f"{where} is outside the RTL tracer's coverage (covered: {', '.join(sorted(COVERED))}); "
                "the model cannot be turned into RTL without approximating it"
            )
        out = layer.get_output_variable()
        shape = tuple(int(s) for s in out.shape)
        result = _fmt(out.type.precision, where)
        if len(layer.inputs) > 1:
            raise RtlCoverageError(f"{where} has several inputs; the RTL tracer follows single-chain models only")
        op = Op(layer.name, "", shape, result)
        if cls == "Input":
            op.kind = "input"
        elif cls in ("Dense", "Conv1D", "Conv2D"):
            strategy = str(layer.get_attr("strategy", "latency")).lower()
            if strategy not in ("latency", "resource"):
                raise RtlCoverageError(f"{where}: strategy {strategy} is not traced; use Latency or Resource")
            op.kind = "dense" if cls == "Dense" else "conv"
            w = layer.weights["weight"]
            b = layer.weights["bias"]
            op.formats = {
                "weight": _fmt(w.type.precision, where + " weights"),
                "bias": _fmt(b.type.precision, where + " bias"),
                "accum": _fmt(layer.get_attr("accum_t").precision, where + " accumulator"),
            }
            op.arrays = {"weight": np.asarray(w.data, dtype=np.float64), "bias": np.asarray(b.data, dtype=np.float64)}
            if cls != "Dense":
                _conv_attrs(layer, op, where)
        elif cls in ("Activation", "ReLU"):
            act = str(layer.get_attr("activation", "relu")).lower()
            if act == "softmax":
                op.kind = "softmax"
            elif act in ("relu", "linear"):
                op.kind = act
            else:
                raise RtlCoverageError(
                    f"{where}: activation {act!r} is computed by hls4ml through a lookup table and is outside the "
                    "RTL tracer's coverage (covered: relu, linear/quantized_bits, and softmax as an untraced tail)"
                )
        elif cls == "Softmax":
            op.kind = "softmax"
        elif cls == "BatchNormalization":
            op.kind = "batchnorm"
            s, b = layer.weights["scale"], layer.weights["bias"]
            op.formats = {"scale": _fmt(s.type.precision, where + " scale"), "bias": _fmt(b.type.precision, where + " bias")}
            op.arrays = {"scale": np.asarray(s.data, dtype=np.float64), "bias": np.asarray(b.data, dtype=np.float64)}
        elif cls in ("Reshape", "Flatten"):
            op.kind = "reshape"
        elif cls == "Transpose":
            op.kind = "transpose"
            op.attrs["perm"] = tuple(int(p) for p in layer.get_attr("perm"))
        elif cls in ("Pooling1D", "Pooling2D"):
            op.kind = "maxpool"
            _pool_attrs(layer, op, where)
        ops.append(op)
    if not ops or ops[0].kind != "input":
        raise RtlCoverageError("the model has no input layer")
    return LayerGraph(ops)


def _conv_attrs(layer, op: Op, where: str) -> None:
    a = layer.attributes
    two_d = layer.class_name == "Conv2D"
    if str(layer.get_attr("data_format", "channels_last")) != "channels_last":
        raise RtlCoverageError(f"{where}: only channels_last convolutions are traced")
    if two_d:
        op.attrs = {
            "kernel": (int(a["filt_height"]), int(a["filt_width"])),
            "stride": (int(a["stride_height"]), int(a["stride_width"])),
            "pad": (int(a["pad_top"]), int(a["pad_bottom"]), int(a["pad_left"]), int(a["pad_right"])),
            "in_shape": (int(a["in_height"]), int(a["in_width"]), int(a["n_chan"])),
        }
        if int(a.get("dilation_height", 1) or 1) != 1 or int(a.get("dilation_width", 1) or 1) != 1:
            raise RtlCoverageError(f"{where}: dilated convolutions are outside the RTL tracer's coverage")
    else:
        op.attrs = {
            "kernel": (1, int(a["filt_width"])),
            "stride": (1, int(a["stride_width"])),
            "pad": (0, 0, int(a["pad_left"]), int(a["pad_right"])),
            "in_shape": (1, int(a["in_width"]), int(a["n_chan"])),
        }
        if int(a.get("dilation", 1) or 1) != 1:
            raise RtlCoverageError(f"{where}: dilated convolutions are outside the RTL tracer's coverage")


def _pool_attrs(layer, op: Op, where: str) -> None:
    a = layer.attributes
    if str(a.get("pool_op", "Max")).lower() != "max":
        raise RtlCoverageError(
            f"{where}: {a.get('pool_op')} pooling divides in its accumulator type; only max pooling is traced"
        )
    if layer.class_name == "Pooling2D":
        op.attrs = {
            "kernel": (int(a["pool_height"]), int(a["pool_width"])),
            "stride": (int(a["stride_height"]), int(a["stride_width"])),
            "pad": (int(a["pad_top"]), int(a["pad_bottom"]), int(a["pad_left"]), int(a["pad_right"])),
            "in_shape": (int(a["in_height"]), int(a["in_width"]), int(a["n_filt"])),
        }
    else:
        op.attrs = {
            "kernel": (1, int(a["pool_width"])),
            "stride": (1, int(a["stride_width"])),
            "pad": (0, 0, int(a["pad_left"]), int(a["pad_right"])),
            "in_shape": (1, int(a["n_in"]), int(a["n_filt"])),
        }
    if any(op.attrs["pad"]):
        raise RtlCoverageError(f"{where}: padded pooling is outside the RTL tracer's coverage (use padding='valid')")


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
        ins = layer.get("inputs", [])
        if kind != "input" and (len(ins) != 1 or ins[0] != prev):
            raise RtlCoverageError(f"{where}: the RTL tracer follows single-chain models only (inputs {ins})")
        p = layer.get("params", {})
        op = Op(name, "", tuple(int(s) for s in layer["shape"]), FixedFormat.from_dict(layer["format"]))
        if kind == "input":
            op.kind = "input"
        elif kind in ("dense", "conv1d", "conv2d"):
            if p.get("product", "mult") != "mult":
                raise RtlCoverageError(
                    f"{where}: {p.get('product')} (power-of-two) weights are outside the RTL tracer's coverage"
                )
            op.kind = "dense" if kind == "dense" else "conv"
            op.formats = {k: FixedFormat.from_dict(p[k]) for k in ("weight", "bias", "accum")}
            op.arrays = {
                "weight": op.formats["weight"].to_float(arrays[f"{name}/kernel"]),
                "bias": op.formats["bias"].to_float(arrays[f"{name}/bias"]),
            }
            if kind != "dense":
                op.attrs = {
                    "kernel": (p["filt_height"], p["filt_width"]),
                    "stride": (p["stride_height"], p["stride_width"]),
                    "pad": (p["pad_top"], p["pad_bottom"], p["pad_left"], p["pad_right"]),
                    "in_shape": (p["in_height"], p["in_width"], p["n_chan"]),
                }
        elif kind == "activation":
            fn = p.get("function")
            if fn not in ("relu", "linear"):
                raise RtlCoverageError(f"{where}: activation {fn!r} is outside the RTL tracer's coverage (relu, linear)")
            op.kind = fn
        elif kind == "batchnorm":
            op.kind = "batchnorm"
            op.formats = {k: FixedFormat.from_dict(p[k]) for k in ("scale", "bias")}
            op.arrays = {k: op.formats[k].to_float(arrays[f"{name}/{k}"]) for k in ("scale", "bias")}
        elif kind in ("pool1d", "pool2d"):
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
        elif kind == "reshape":
            op.kind = "reshape"
        elif kind == "zeropad":
            op.kind = "zeropad"
            op.attrs = {
                "pad": (p["pad_top"], p["pad_bottom"], p["pad_left"], p["pad_right"]),
                "in_shape": (p["in_height"], p["in_width"], p["n_chan"]),
            }
        elif kind == "softmax":
            op.kind = "softmax"
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
        else:
            raise RtlCoverageError(f"{where}: op {kind!r} is outside the RTL tracer's coverage")
        ops.append(op)
        prev = name
    if not ops or ops[0].kind != "input":
        raise RtlCoverageError("the engine graph has no input layer")
    return LayerGraph(ops)
