"""Write a compiled hls4ml model's layer graph as the engine IR (docs/engine-ir.md).

The graph is read after hls4ml's optimizers ran, so the formats, fused activations and quantized weights are
the ones the C simulation uses. Softmax lookup tables are produced by compiling hls4ml's own table
initialisers with g++ against the project's headers, so they hold the C simulation's values bit for bit.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from functools import partial
from pathlib import Path

import numpy as np

from lepton_host import opset
from lepton_host.engine import GRAPH_NAME, IR_SCHEMA, IR_VERSION, WEIGHTS_NAME
from lepton_host.errors import EmulationError
from lepton_host.fixedpoint import FixedFormat

from . import export_merge, export_spatial, hls_probe
from .convert import po2_pairs

# hls4ml class -> the op it is exported as; a class listed by several kinds starts as the first (its handler may
# hand the layer on, e.g. an Activation that is not relu or linear becomes a lookup table).
CLASS_OPS: dict[str, str] = {}
for _kind in opset.KINDS:
    for _cls in _kind.hls4ml_classes:
        CLASS_OPS.setdefault(_cls, _kind.op)
SUPPORTED = tuple(CLASS_OPS)
_LINEAR_LIKE = ("linear", "relu")


def export_engine(hls_model, out_dir) -> list[Path]:
    """Write `out_dir/graph.json` and `out_dir/weights.npz`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exporter = _Exporter(hls_model)
    graph = exporter.run()
    graph_path, weights_path = out / GRAPH_NAME, out / WEIGHTS_NAME
    graph_path.write_text(json.dumps(graph, indent=1) + "\n")
    np.savez_compressed(weights_path, **exporter.arrays)
    return [graph_path, weights_path]


def fixed_format(precision) -> FixedFormat:
    """hls4ml precision type -> FixedFormat (e.g. `fixed<18,8,RND,SAT,0>`, `ufixed<6,0,RND_CONV,SAT,0>`)."""
    return FixedFormat.parse(str(precision))


class _Exporter:
    def __init__(self, hls_model):
        self.model = hls_model
        self.arrays: dict[str, np.ndarray] = {}
        self.names: dict[str, str] = {}  # hls4ml output variable name -> producing layer name
        self.layers: list[dict] = []

    def run(self) -> dict:
        import hls4ml

        cfg = self.model.config
        for layer in self.model.get_layers():
            self.layers.append(self._layer(layer))
        inputs = [self.names[n] for n in self.model.inputs]
        outputs = [self.names[n] for n in self.model.outputs]
        return {
            "schema": IR_SCHEMA,
            "version": IR_VERSION,
            "hls4ml_version": hls4ml.__version__,
            "backend": str(cfg.backend.name),
            "io_type": str(cfg.get_config_value("IOType")),
            "project_name": str(cfg.get_project_name()),
            "inputs": inputs,
            "outputs": outputs,
            "layers": self.layers,
        }

    # ---- one layer ------------------------------------------------------------------------------------
    def _layer(self, layer) -> dict:
        cls = layer.class_name
        op = CLASS_OPS.get(cls)
        handler = self.handler(op) if op else None
        if handler is None:
            self._unsupported(layer, f"class {cls}")
        out_var = layer.get_output_variable()
        rec = {
            "name": layer.name,
            "op": None,
            "class_name": cls,
            "inputs": [self.names[v] for v in layer.inputs] if cls != "Input" else [],
            "shape": [int(s) for s in out_var.shape],
            "format": fixed_format(out_var.type.precision).to_dict(),
            "params": {},
        }
        handler(layer, rec)
        for out_name in layer.outputs:
            self.names[out_name] = layer.name
        return rec

    def handler(self, op: str):
        """The export method of an opset op."""
        return {
            "input": self._input,
            "dense": self._dense,
            "conv1d": self._conv,
            "conv2d": self._conv,
            "activation": self._activation,
            "lookup": self._lookup,
            "batchnorm": self._batchnorm,
            "pool1d": self._pool,
            "pool2d": self._pool,
            "reshape": self._reshape,
            "zeropad": self._zeropad,
            "softmax": self._softmax,
            "merge": partial(export_merge.merge, self),
            "concatenate": partial(export_merge.concatenate, self),
            "dot": partial(export_merge.dot, self),
            "clone": partial(export_merge.clone, self),
            "crop": partial(export_spatial.crop, self),
            "upsample": partial(export_spatial.upsample, self),
            "transpose": partial(export_spatial.transpose, self),
            "global_pool": partial(export_spatial.global_pool, self),
            "depthwise1d": partial(export_spatial.depthwise, self),
            "depthwise2d": partial(export_spatial.depthwise, self),
        }.get(op)

    def _unsupported(self, layer, what: str):
        raise EmulationError(
            f"layer {layer.name!r} ({layer.class_name}): {what} is not supported by the fast engine; supported "
            f"layer classes: {', '.join(SUPPORTED)} (see docs/engine-ir.md)"
        )

    def _input(self, layer, rec):
        rec["op"] = "input"

    def _in_format(self, layer) -> FixedFormat:
        return fixed_format(layer.get_input_variable().type.precision)

    def _raw(self, var, fmt: FixedFormat) -> np.ndarray:
        """The values the C simulation holds: hls4ml prints each weight with as many decimals as the type has
        fraction bits, and the C++ side converts that text to the weight type."""
        text = list(var)
        data = np.array([float(t) for t in text], dtype=np.float64).reshape(np.asarray(var.data).shape)
        return fmt.quantize(data)

    def _mac_params(self, layer, rec, kernel_rows: int, n_out: int):
        """Weights, bias and formats shared by dense and convolution layers."""
        strategy = str(layer.get_attr("strategy", "latency")).lower()
        if strategy not in ("latency", "resource"):
            self._unsupported(layer, f"strategy {strategy!r} (supported: Latency, Resource)")
        ws = layer.weights
        wvar, bvar = ws["weight"], ws.get("bias")
        params = rec["params"]
        params["accum"] = fixed_format(layer.types["accum_t"].precision).to_dict()
        from hls4ml.model.types import ExponentPrecisionType, XnorPrecisionType

        precision = wvar.type.precision
        key = f"{layer.name}/"
        if isinstance(precision, ExponentPrecisionType):
            # hls4ml writes each power-of-two weight as "{sign, exponent}" (sign 1 = positive).
            pairs = po2_pairs(wvar)
            params["product"] = "exponential"
            params["exp_width"] = int(precision.width)
            params["data_width"] = int(self._in_format(layer).width)
            # The product type as the project's (possibly patched) nnet_mult.h defines it, narrowed to the
            # exact product of this layer's real exponents when it holds every one of them (a patched header's
            # type spans the whole exponent range, wider than int64).
            width, integer = _exponential_product_type(self.model, layer.get_input_variable().type.name, wvar.type.name)
            exact = _exact_shift_format(self._in_format(layer), pairs[:, 1].astype(np.int64))
            holds = width - integer >= exact.frac and integer >= exact.integer
            params["product_format"] = (exact if holds else FixedFormat(width, integer)).to_dict()
            self.arrays[key + "kernel_sign"] = self._kernel(layer, pairs[:, 0].astype(np.int64), kernel_rows, n_out)
            self.arrays[key + "kernel_exp"] = self._kernel(layer, pairs[:, 1].astype(np.int64), kernel_rows, n_out)
            params["weight"] = None
        else:
            wfmt = fixed_format(wvar.type.precision)
            if isinstance(precision, XnorPrecisionType) or wfmt.width == 1:
                self._unsupported(layer, f"binary weights ({precision})")
            params["product"] = "mult"
            params["weight"] = wfmt.to_dict()
            self.arrays[key + "kernel"] = self._kernel(layer, self._raw(wvar, wfmt), kernel_rows, n_out)
        if bvar is not None:
            bfmt = fixed_format(bvar.type.precision)
            params["bias"] = bfmt.to_dict()
            # the C++ reads the first n_out entries (hls4ml sizes a missing bias like the kernel)
            self.arrays[key + "bias"] = self._raw(bvar, bfmt).reshape(-1)[:n_out]
        else:
            bfmt = FixedFormat(2, 2)
            params["bias"] = bfmt.to_dict()
            self.arrays[key + "bias"] = np.zeros(n_out, dtype=np.int64)

    def _kernel(self, layer, values: np.ndarray, rows: int, n_out: int) -> np.ndarray:
        """A kernel in the IR's [rows, n_out] layout. hls4ml's Resource strategy stores it with the output
        axis first ((n_out, n_in), (F, W, C), (F, H, W, C)); undo that."""
        stored = np.asarray(layer.weights["weight"].data).shape
        values = values.reshape(stored)
        if layer.get_attr("_weights_transposed", False) is True:
            values = np.moveaxis(values, 0, -1)
        return values.reshape(rows, n_out)

    def _dense(self, layer, rec):
        rec["op"] = "dense"
        n_in, n_out = int(layer.get_attr("n_in")), int(layer.get_attr("n_out"))
        rec["params"].update(n_in=n_in, n_out=n_out)
        self._mac_params(layer, rec, n_in, n_out)

    def _conv(self, layer, rec):
        is2d = layer.class_name in ("Conv2D", "PointwiseConv2D")
        rec["op"] = "conv2d" if is2d else "conv1d"
        a = layer.get_attr
        if any(int(a(k, 1) or 1) != 1 for k in ("dilation", "dilation_height", "dilation_width")):
            self._unsupported(layer, "dilation other than 1")
        geo = {
            "in_height": int(a("in_height", 1)) if is2d else 1,
            "in_width": int(a("in_width")),
            "n_chan": int(a("n_chan")),
            "filt_height": int(a("filt_height", 1)) if is2d else 1,
            "filt_width": int(a("filt_width")),
            "n_filt": int(a("n_filt")),
            "stride_height": int(a("stride_height", 1)) if is2d else 1,
            "stride_width": int(a("stride_width")),
            "pad_top": int(a("pad_top", 0)) if is2d else 0,
            "pad_bottom": int(a("pad_bottom", 0)) if is2d else 0,
            "pad_left": int(a("pad_left")),
            "pad_right": int(a("pad_right")),
            "out_height": int(a("out_height", 1)) if is2d else 1,
            "out_width": int(a("out_width")),
        }
        rec["params"].update(geo)
        rows = geo["filt_height"] * geo["filt_width"] * geo["n_chan"]
        wshape = tuple(layer.weights["weight"].data.shape)
        if layer.get_attr("_weights_transposed", False) is True:
            wshape = wshape[1:] + wshape[:1]
        expected = (
            (geo["filt_height"], geo["filt_width"], geo["n_chan"], geo["n_filt"])
            if is2d
            else (geo["filt_width"], geo["n_chan"], geo["n_filt"])
        )
        if wshape != expected:
            self._unsupported(layer, f"kernel layout {wshape} (expected {expected})")
        self._mac_params(layer, rec, rows, geo["n_filt"])

    def _activation(self, layer, rec):
        fn = str(layer.get_attr("activation")).lower()
        if fn not in _LINEAR_LIKE:
            return self._lookup(layer, rec)
        rec["op"] = "activation"
        rec["params"]["function"] = fn

    def _lookup(self, layer, rec):
        """Any element-wise layer: its step function read from the C simulation (lookup_tables.py)."""
        from .lookup_tables import tabulate

        rec["op"] = "lookup"
        in_var, out_var = layer.get_input_variable(), layer.get_output_variable()
        size = int(np.prod(in_var.shape))
        if int(np.prod(out_var.shape)) != size:
            self._unsupported(layer, "a lookup layer whose output size differs from its input size")
        lo, hi = self._reachable(rec["inputs"][0])
        table = tabulate(self.model, layer, self._in_format(layer), fixed_format(out_var.type.precision), size,
                         int(in_var.shape[-1]), lo, hi)
        rec["params"].update(function=str(layer.get_attr("activation", layer.class_name)).lower(),
                             segments=int(len(table.starts)), positions=int(table.values.shape[1]))
        self.arrays[f"{layer.name}/starts"] = table.starts
        self.arrays[f"{layer.name}/values"] = table.values

    def _reachable(self, name: str) -> tuple[int, int]:
        """Raw bounds of a layer's output that the engine proves from the weights and the input type: a table
        only needs the values a layer can receive (outside them some hls4ml functions wrap)."""
        from lepton_host.engine import Engine

        prefix = {"schema": IR_SCHEMA, "version": IR_VERSION, "inputs": [self.layers[0]["name"]], "outputs": [name],
                  "layers": self.layers}
        node = Engine(prefix, self.arrays).output_node
        return node.lo, node.hi

    def _batchnorm(self, layer, rec):
        from hls4ml.model.types import ExponentPrecisionType

        rec["op"] = "batchnorm"
        ws = layer.weights
        bfmt = fixed_format(ws["bias"].type.precision)
        if isinstance(ws["scale"].type.precision, ExponentPrecisionType):
            # QKeras' auto_po2 alpha (hls4ml's ApplyAlpha): "{sign, exponent}" pairs, multiplied as exact shifts
            # in the product type the build widens (patch_firmware), so an exact fixed-point scale is the same.
            pairs = po2_pairs(ws["scale"])
            values = np.where(pairs[:, 0] == 1, 1.0, -1.0) * np.exp2(pairs[:, 1])
            exps = pairs[:, 1].astype(np.int64)
            frac = max(0, -int(exps.min()))
            integer = max(int(exps.max()), 0) + 2
            sfmt = FixedFormat(integer + frac, integer)
            scale_raw = sfmt.quantize(values)
        else:
            sfmt = fixed_format(ws["scale"].type.precision)
            scale_raw = self._raw(ws["scale"], sfmt).ravel()
        n_filt = int(layer.get_attr("n_filt", -1))
        n_scale_bias = int(np.asarray(ws["scale"].data).size)
        rec["params"].update(
            n_filt=n_scale_bias if n_filt in (-1, 0) else n_filt, scale=sfmt.to_dict(), bias=bfmt.to_dict()
        )
        self.arrays[f"{layer.name}/scale"] = scale_raw
        self.arrays[f"{layer.name}/bias"] = self._raw(ws["bias"], bfmt).ravel()

    def _pool(self, layer, rec):
        is2d = layer.class_name == "Pooling2D"
        rec["op"] = "pool2d" if is2d else "pool1d"
        a = layer.get_attr
        op = str(a("pool_op", "Max")).lower()
        mode = {"max": "max", "average": "average"}.get(op)
        if mode is None:
            self._unsupported(layer, f"pooling operation {op!r}")
        if str(a("data_format", "channels_last")) != "channels_last":
            self._unsupported(layer, "channels_first data")
        rec["params"].update(
            mode=mode,
            accum=fixed_format(layer.types["accum_t"].precision).to_dict(),
            in_height=int(a("in_height", 1)) if is2d else 1,
            in_width=int(a("in_width") if is2d else a("n_in")),
            n_filt=int(a("n_filt")),
            pool_height=int(a("pool_height", 1)) if is2d else 1,
            pool_width=int(a("pool_width")),
            stride_height=int(a("stride_height", 1)) if is2d else 1,
            stride_width=int(a("stride_width")),
            pad_top=int(a("pad_top", 0)) if is2d else 0,
            pad_bottom=int(a("pad_bottom", 0)) if is2d else 0,
            pad_left=int(a("pad_left", 0)),
            pad_right=int(a("pad_right", 0)),
            out_height=int(a("out_height", 1)) if is2d else 1,
            out_width=int(a("out_width") if is2d else a("n_out")),
            count_pad=bool(a("count_pad", False)),
        )

    def _reshape(self, layer, rec):
        rec["op"] = "reshape"
        if rec["format"] != fixed_format(layer.get_input_variable().type.precision).to_dict():
            self._unsupported(layer, "a reshape that changes the fixed-point format")

    def _zeropad(self, layer, rec):
        rec["op"] = "zeropad"
        a = layer.get_attr
        is2d = layer.class_name == "ZeroPadding2D"
        if str(a("data_format", "channels_last")) != "channels_last":
            self._unsupported(layer, "channels_first data")
        rec["params"].update(
            in_height=int(a("in_height", 1)) if is2d else 1,
            in_width=int(a("in_width")),
            n_chan=int(a("n_chan")),
            pad_top=int(a("pad_top", 0)) if is2d else 0,
            pad_bottom=int(a("pad_bottom", 0)) if is2d else 0,
            pad_left=int(a("pad_left", 0)),
            pad_right=int(a("pad_right", 0)),
        )

    def _softmax(self, layer, rec):
        rec["op"] = "softmax"
        impl = str(layer.get_attr("implementation", "stable")).lower()
        if impl not in ("stable", "latency"):
            self._unsupported(layer, f"softmax implementation {impl!r} (supported: stable, latency)")
        n_in = int(np.prod(layer.get_output_variable().shape))
        n_inner = int(layer.get_attr("n_inner", 1) or 1)
        if n_inner != 1:
            self._unsupported(layer, "softmax over an axis other than the last")
        types = layer.types
        fmt = {k: fixed_format(types[f"{k}_t"].precision) for k in ("accum", "exp_table", "inv_table", "inv_inp")}
        config_cpp = str(layer.get_attr("config_cpp", ""))
        n_slice = int(_config_value(config_cpp, "n_slice", layer.get_output_variable().shape[-1]))
        exp_size = int(_config_value(config_cpp, "exp_table_size", layer.get_attr("table_size", 1024)))
        inv_size = int(_config_value(config_cpp, "inv_table_size", layer.get_attr("table_size", 1024)))
        m = re.search(r"typedef\s+(ap_u?fixed<[^;]*>)\s+inp_norm_t\s*;", config_cpp)
        inp_norm = FixedFormat.parse(m.group(1)) if m else None
        if inp_norm is None and "inp_norm_t" in types:  # a named type set on the layer (the build's softmax tuning)
            inp_norm = fixed_format(types["inp_norm_t"].precision)
        params = rec["params"]
        params.update(
            implementation=impl,
            n_slice=n_slice,
            n_outer=n_in // n_slice,
            exp_table_size=exp_size,
            inv_table_size=inv_size,
            exp_scale=float(_config_value(config_cpp, "exp_scale", 1.0)),
            **{k: f.to_dict() for k, f in fmt.items()},
            inp_norm=inp_norm.to_dict() if inp_norm else None,
        )
        if impl == "stable" and inp_norm is None:
            self._unsupported(layer, "a stable softmax without inp_norm_t")
        exp_index = inp_norm if impl == "stable" else self._in_format(layer)
        for size, f in ((exp_size, exp_index), (inv_size, fmt["inv_inp"])):
            if size & (size - 1) or math.log2(size) > f.width:
                self._unsupported(layer, f"table size {size} with index format {f}")
        data_type = layer.get_input_variable().type.name
        exp_table, inv_table = _softmax_tables(self.model, config_cpp, impl, data_type)
        self.arrays[f"{layer.name}/exp_table"] = fmt["exp_table"].quantize(exp_table)
        self.arrays[f"{layer.name}/inv_table"] = fmt["inv_table"].quantize(inv_table)


def _config_value(config_cpp: str, name: str, default):
    m = re.search(rf"\b{name}\s*=\s*([-0-9.eE]+)\s*;", config_cpp)
    return m.group(1) if m else default


def _exact_shift_format(x_fmt: FixedFormat, exponents: np.ndarray) -> FixedFormat:
    """The narrowest signed type holding +-x * 2**e for every exponent e used and every x of `x_fmt`."""
    left, right = max(int(exponents.max()), 0), max(-int(exponents.min()), 0)
    integer = x_fmt.integer + left + (0 if x_fmt.signed else 1)
    frac = x_fmt.frac + right
    return FixedFormat(integer + frac, integer)


def _exponential_product_type(hls_model, data_type: str, weight_type: str) -> tuple[int, int]:
    """(width, integer bits) of hls4ml's power-of-two product type; may exceed what FixedFormat carries."""
    out = hls_probe.compile_and_run(
        hls_model,
        f"""
#include <cstdio>
#include "defines.h"
#include "nnet_utils/nnet_mult.h"
int main() {{
    typedef nnet::product::weight_exponential<{data_type}, {weight_type}>::r_T r_T;
    std::printf("%d %d %d\\n", (int)r_T::width, (int)r_T::iwidth, (int)r_T::qmode);
    return 0;
}}
""",
        "the power-of-two product type",
    )
    width, integer, _ = (int(v) for v in out.split())
    return width, integer


def _softmax_tables(hls_model, config_cpp: str, impl: str, data_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Run hls4ml's `init_exp_table` / `init_invert_table` for this layer's config, compiled against the
    project's own headers, and read back the table values (exact in double)."""
    m = re.search(r"struct\s+(\w+)\s*:\s*nnet::activ_config", config_cpp)
    if not m:
        raise EmulationError("softmax layer has no activ_config struct in its generated C++; cannot build tables")
    cfg = m.group(1)
    index_t = f"{cfg}::inp_norm_t" if impl == "stable" else data_type
    negative = "true" if impl == "stable" else "false"
    src = f"""
#include <cstdio>
#include "defines.h"
#include "nnet_utils/nnet_activation.h"
{config_cpp}
int main() {{
    static {cfg}::exp_table_t e[{cfg}::exp_table_size];
    static {cfg}::inv_table_t v[{cfg}::inv_table_size];
    nnet::init_exp_table<{index_t}, {cfg}>(e, {negative});
    nnet::init_invert_table<{cfg}::inv_inp_t, {cfg}>(v);
    for (unsigned i = 0; i < {cfg}::exp_table_size; i++) std::printf("%.17g\\n", e[i].to_double());
    std::printf("--\\n");
    for (unsigned i = 0; i < {cfg}::inv_table_size; i++) std::printf("%.17g\\n", v[i].to_double());
    return 0;
}}
"""
    stdout = hls_probe.compile_and_run(hls_model, src, "the softmax tables")
    exp_txt, inv_txt = stdout.split("--\n")
    return np.array(exp_txt.split(), dtype=np.float64), np.array(inv_txt.split(), dtype=np.float64)


def export_emulation(hls_model, package_dir) -> list[Path]:
    """Both emulators' artifacts of a compiled model into a package directory: `emulation/csim.so` (hls4ml's
    compiled C simulation) and `engine/` (this module's IR)."""
    root = Path(package_dir)
    firmware = Path(hls_model.config.get_output_dir()) / "firmware"
    libs = sorted(firmware.glob(f"{hls_model.config.get_project_name()}-*.so"), key=lambda p: p.stat().st_mtime)
    if not libs:
        raise EmulationError(f"{firmware} holds no compiled C simulation: call hls_model.compile() first")
    dest = root / "emulation" / "csim.so"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(libs[-1], dest)
    return [dest, *export_engine(hls_model, root / "engine")]
