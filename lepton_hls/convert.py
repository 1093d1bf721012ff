"""(Q)Keras model -> hls4ml project whose C simulation reproduces the model bit for bit.

hls4ml's own precision inference leaves some layers on the 16-bit default (accumulators behind power-of-two
weights, the float ReLU split out of a conv layer), and those wrap or truncate. The exactness pass here derives,
for every layer no quantizer fixes, the narrowest type that holds its result exactly (from the real weight values
and the input range), reconverting until nothing changes. Float models get their types from profiling instead.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from lepton_host.errors import LeptonError
from lepton_host.fixedpoint import FixedFormat

from .build_config import BuildConfig

MAC_LAYERS = ("Dense", "Conv1D", "Conv2D", "PointwiseConv1D", "PointwiseConv2D")
PASS_THROUGH_ACTIVATIONS = ("relu", "linear")
MAX_EXACT_WIDTH = 48


class ConversionError(LeptonError):
    """hls4ml could not convert the model with this configuration."""


@dataclass
class ConversionReport:
    """What the conversion decided, for the manifest and for the user."""

    float_model: bool
    exact_types: dict = field(default_factory=dict)  # layer -> {"accum": str, "result": str} set by the exact pass
    profiled_types: dict = field(default_factory=dict)  # float models: layer -> chosen types
    softmax: dict = field(default_factory=dict)
    iterations: int = 0
    notes: list = field(default_factory=list)


def is_quantized(model) -> bool:
    """True when any layer carries a QKeras quantizer."""
    for layer in model.layers:
        name = type(layer).__name__
        if name.startswith("Q") or hasattr(layer, "get_quantizers"):
            return True
    return False


def base_hls_config(model, cfg: BuildConfig) -> dict:
    import hls4ml

    default = "fixed<16,6>" if cfg.default_precision == "auto" else cfg.default_precision
    hcfg = hls4ml.utils.config_from_keras_model(
        model, granularity="name", backend=cfg.backend, default_precision=default, default_reuse_factor=cfg.reuse_factor
    )
    hcfg["Model"]["Strategy"] = "Latency" if cfg.strategy == "distributed_arithmetic" else cfg.strategy
    layers = hcfg["LayerName"]
    input_names = [n for n in model.input_names] if hasattr(model, "input_names") else []
    for name in input_names:
        layers.setdefault(name, {}).setdefault("Precision", {})["result"] = cfg.input_precision
    for lname, lcfg in layers.items():
        if cfg.strategy == "distributed_arithmetic" and _keras_class(model, lname) in ("Dense", "QDense", "Conv1D", "Conv2D", "QConv1D", "QConv2D"):
            lcfg["Strategy"] = "distributed_arithmetic"
        if "Implementation" in lcfg:  # softmax
            lcfg["Implementation"] = cfg.softmax_implementation
            lcfg["TableSize"] = 2**cfg.softmax_table_bits
        if cfg.default_precision != "auto":
            prec = lcfg.get("Precision", {})
            for k, v in list(prec.items()):
                if v == "auto":
                    prec[k] = cfg.default_precision
    for lname, overrides in (cfg.layer_precision or {}).items():
        if lname not in layers:
            raise ConversionError(
                f"layer_precision names layer {lname!r}, which the model does not have; layers: {', '.join(layers)}"
            )
        layers[lname].setdefault("Precision", {}).update(overrides)
    return hcfg


def convert(model, cfg: BuildConfig, output_dir: str, calibration: np.ndarray | None = None, progress=None):
    """Return (hls_model, ConversionReport). `calibration` (model-domain inputs) drives profiling for float models."""
    progress = progress or (lambda msg: None)
    report = ConversionReport(float_model=not is_quantized(model))
    hcfg = base_hls_config(model, cfg)
    if report.float_model:
        progress("float model: profiling layer ranges to choose fixed-point types")
        _profile_types(model, cfg, hcfg, calibration, output_dir, report)
    hls_model = None
    for iteration in range(1, 12):
        hls_model = _hls4ml_convert(model, hcfg, cfg, output_dir)
        report.iterations = iteration
        changes = _exactness_changes(hls_model, hcfg, cfg)
        if not changes:
            break
        for lname, prec in changes.items():
            hcfg["LayerName"].setdefault(lname, {}).setdefault("Precision", {}).update(prec)
            report.exact_types.setdefault(lname, {}).update(prec)
        progress(f"exactness pass {iteration}: widened {', '.join(changes)}")
    else:
        raise ConversionError("fixed-point types did not settle after 11 passes; set layer_precision explicitly")
    report.softmax = _tune_softmax(hls_model, cfg)
    return hls_model, report


def _hls4ml_convert(model, hcfg: dict, cfg: BuildConfig, output_dir: str):
    import hls4ml

    kwargs = dict(
        hls_config=copy.deepcopy(hcfg),
        backend=cfg.backend,
        output_dir=output_dir,
        project_name=cfg.project_name,
        io_type=cfg.io_type,
        part=cfg.part,
        clock_period=cfg.clock_ns,
    )
    if cfg.hls4ml_board:
        kwargs["board"] = cfg.hls4ml_board
    try:
        return hls4ml.converters.convert_from_keras_model(model, **kwargs)
    except Exception as e:  # hls4ml raises bare Exceptions for unsupported layers and bad configs
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ConversionError(f"hls4ml could not convert the model: {msg}") from e


def fmt_of(precision) -> FixedFormat | None:
    """hls4ml precision object -> FixedFormat, or None for types with no fixed-point meaning (exponent, xnor)."""
    from hls4ml.model.types import ExponentPrecisionType, XnorPrecisionType

    if isinstance(precision, (ExponentPrecisionType, XnorPrecisionType)):
        return None
    text = str(precision)
    if text.startswith(("fixed", "ufixed", "int", "uint", "ap_")):
        try:
            return FixedFormat.parse(text)
        except LeptonError:
            return None
    return None


def _exactness_changes(hls_model, hcfg: dict, cfg: BuildConfig) -> dict:
    """Layers whose accumulator/result type cannot hold the exact value -> the exact type strings."""
    if cfg.default_precision != "auto":
        return {}
    changes: dict = {}
    layer_cfg = hcfg["LayerName"]
    for layer in hls_model.get_layers():
        user = cfg.layer_precision.get(layer.name, {}) if cfg.layer_precision else {}
        free_result = layer_cfg.get(layer.name, {}).get("Precision", {}).get("result", "auto") == "auto" and "result" not in user
        in_var = layer.get_input_variable() if layer.inputs else None
        in_fmt = fmt_of(in_var.type.precision) if in_var is not None else None
        if in_fmt is None:
            continue
        if layer.class_name in MAC_LAYERS:
            exact = _exact_mac_format(layer, in_fmt)
            if exact is None:
                continue
            want = {}
            if "accum" not in user and not _holds(fmt_of(layer.get_attr("accum_t").precision), exact):
                want["accum"] = _hls_str(exact)
            if free_result and not _holds(fmt_of(layer.get_output_variable().type.precision), exact):
                want["result"] = _hls_str(exact)
            if want:
                changes[layer.name] = want
        elif layer.class_name in ("Activation", "Pooling1D", "Pooling2D") and free_result:
            act = layer.get_attr("activation")
            pool = layer.get_attr("pool_op", "Max")
            if layer.class_name == "Activation" and act not in PASS_THROUGH_ACTIVATIONS:
                continue
            if layer.class_name.startswith("Pooling") and str(pool).lower() != "max":
                continue
            if not _holds(fmt_of(layer.get_output_variable().type.precision), in_fmt):
                changes[layer.name] = {"result": _hls_str(in_fmt)}
    return changes


def _exact_mac_format(layer, in_fmt: FixedFormat) -> FixedFormat | None:
    weights = layer.weights  # keyed by role ('weight', 'bias'); get_weights() names them by C++ variable
    w = _weight_values(layer, "weight", weights)
    b = _weight_values(layer, "bias", weights)
    if w is None:
        return None
    n_out = w.shape[-1]
    w2 = w.reshape(-1, n_out)
    b = np.zeros(n_out) if b is None else b.reshape(-1)
    f_w, f_b = _frac_bits(w2), _frac_bits(b)
    if f_w is None or f_b is None:
        return None
    frac = max(in_fmt.frac + f_w, f_b)
    lo_x, hi_x = in_fmt.min_value, in_fmt.max_value
    lo = b + np.minimum(w2 * lo_x, w2 * hi_x).sum(axis=0)
    hi = b + np.maximum(w2 * lo_x, w2 * hi_x).sum(axis=0)
    lo, hi = float(lo.min()), float(hi.max())
    integer = 1
    while not (-(2.0 ** (integer - 1)) <= lo and hi <= 2.0 ** (integer - 1) - 2.0**-frac):
        integer += 1
    width = integer + frac
    if width > MAX_EXACT_WIDTH:
        return None  # leave hls4ml's choice; verification will report the residual
    return FixedFormat(width=width, integer=integer, signed=True)


def _weight_values(layer, name: str, weights: dict) -> np.ndarray | None:
    var = weights.get(name)
    if var is None:
        return None
    data = np.asarray(var.data, dtype=np.float64)
    fmt = fmt_of(var.type.precision)
    # Float weights are cast to their type when the C++ is compiled; quantized ones are already on the grid.
    return fmt.cast(data) if fmt is not None else data


def _frac_bits(values: np.ndarray, limit: int = 32) -> int | None:
    for f in range(0, limit + 1):
        scaled = np.ldexp(values, f)
        if np.all(scaled == np.round(scaled)):
            return f
    return None


def _holds(current: FixedFormat | None, exact: FixedFormat) -> bool:
    """True when `current` represents every value of `exact` without rounding or overflow."""
    if current is None:
        return False
    if current.frac < exact.frac:
        return False
    if exact.signed and not current.signed:
        return False
    int_cur = current.integer - (1 if current.signed and not exact.signed else 0)
    return int_cur >= exact.integer


def _hls_str(fmt: FixedFormat) -> str:
    base = "fixed" if fmt.signed else "ufixed"
    return f"{base}<{fmt.width},{fmt.integer},{fmt.rounding},{fmt.saturation}>"


def _tune_softmax(hls_model, cfg: BuildConfig) -> dict:
    """Give the stable softmax a normalised input that keeps `softmax_table_bits` bits and saturates, and
    tables wide enough that the lookup, not the storage, sets the error (hls4ml's default slices 10 of 17 bits)."""
    tuned = {}
    for layer in hls_model.get_layers():
        if layer.class_name != "Softmax" or cfg.softmax_implementation != "stable":
            continue
        bits = cfg.softmax_table_bits
        n = layer.get_input_variable().size()
        sum_int = math.ceil(math.log2(n + 1))
        types = {
            "inp_norm_t": FixedFormat(bits, 4, signed=False, rounding="RND", saturation="SAT"),
            "exp_table_t": FixedFormat(18, 1, signed=False, rounding="RND", saturation="SAT"),
            "inv_table_t": FixedFormat(18, 1, signed=False, rounding="RND", saturation="SAT"),
            "inv_inp_t": FixedFormat(bits, sum_int, signed=False, rounding="RND", saturation="SAT"),
            "accum_t": FixedFormat(18 + sum_int, sum_int, signed=False, rounding="RND", saturation="SAT"),
        }
        template = layer.get_attr("exp_table_t")
        for attr, fmt in types.items():
            t = copy.copy(template)
            t.name = f"{layer.name}_{attr}"
            t.precision = _converted_precision(template.precision, fmt)
            layer.set_attr(attr, t)
        out_type = layer.get_output_variable().type
        out_type.precision = _converted_precision(out_type.precision, FixedFormat(16, 0, signed=False, rounding="RND", saturation="SAT"))
        layer.set_attr("table_size", 2**bits)
        # hls4ml renders each layer's config struct during conversion, with inp_norm_t inlined: render it again so
        # the struct names the types set here.
        from hls4ml.backends.vivado.passes.core_templates import SoftmaxConfigTemplate

        layer.set_attr("config_cpp", SoftmaxConfigTemplate().format(layer))
        tuned[layer.name] = {k: str(v) for k, v in types.items()} | {"result_t": "ap_ufixed<16,0,AP_RND,AP_SAT>", "table_size": 2**bits}
    return tuned


def _converted_precision(template, fmt: FixedFormat):
    """A backend-converted precision object (it carries the C++ definition hooks) set to `fmt`."""
    from hls4ml.model.types import RoundingMode, SaturationMode

    p = copy.copy(template)
    p.width, p.integer, p.signed = fmt.width, fmt.integer, fmt.signed
    p.rounding_mode = RoundingMode.from_string(fmt.rounding)
    p.saturation_mode = SaturationMode.from_string(fmt.saturation)
    return p


def _keras_class(model, lname: str) -> str:
    try:
        return type(model.get_layer(lname)).__name__
    except ValueError:
        return ""


# ---- float models: types from profiling ------------------------------------------------------------------
def _profile_types(model, cfg: BuildConfig, hcfg: dict, calibration, output_dir: str, report: ConversionReport) -> None:
    """Convert once with wide types, trace the C simulation on calibration data, then give every layer a
    `profile_width`-bit result type whose integer part covers twice the largest value seen, and weights a type
    sized to their own range."""
    if calibration is None:
        raise ConversionError("a float model needs calibration inputs to choose its fixed-point types")
    wide = copy.deepcopy(hcfg)
    for lcfg in wide["LayerName"].values():
        lcfg["Trace"] = True
        prec = lcfg.setdefault("Precision", {})
        for k in list(prec):
            if k in ("result", "accum") and "table" not in k:
                prec[k] = "fixed<40,16>"
    probe_dir = output_dir.rstrip("/") + "_profile"
    probe = _hls4ml_convert(model, wide, cfg, probe_dir)
    probe.compile()
    _, trace = probe.trace(np.ascontiguousarray(calibration, dtype=np.float32))
    W = cfg.profile_width
    for layer in probe.get_layers():
        lcfg = hcfg["LayerName"].setdefault(layer.name, {}).setdefault("Precision", {})
        chosen = {}
        for wname in ("weight", "bias"):
            var = layer.weights.get(wname)
            if var is not None and wname in lcfg:
                peak = float(np.max(np.abs(var.data))) if var.data.size else 0.0
                chosen[wname] = f"fixed<{W},{_int_bits(peak)}>"
        if layer.name in trace and layer.class_name != "Softmax" and "result" in lcfg:
            peak = float(np.max(np.abs(trace[layer.name])))
            chosen["result"] = f"fixed<{W},{_int_bits(2 * peak)},RND,SAT>"
            if layer.class_name in MAC_LAYERS:
                chosen["accum"] = "auto"  # the exactness pass sizes it from the chosen weight types
        lcfg.update(chosen)
        if chosen:
            report.profiled_types[layer.name] = chosen
    report.notes.append(
        f"float model: {W}-bit types chosen by profiling {len(calibration)} samples; results round and saturate"
    )


def _int_bits(peak: float) -> int:
    """Integer bits (sign included) for a signed type holding +-peak."""
    if peak <= 0:
        return 1
    return max(1, math.floor(math.log2(peak)) + 2)
