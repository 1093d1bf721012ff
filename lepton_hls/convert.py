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
from .compat.hls4ml import render_softmax_config

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
    try:
        hcfg = hls4ml.utils.config_from_keras_model(
            model, granularity="name", backend=cfg.backend, default_precision=default,
            default_reuse_factor=cfg.reuse_factor,
        )
    except Exception as e:  # hls4ml raises bare Exceptions for layers and options it cannot parse
        raise ConversionError(f"hls4ml could not read the model: {_last_line(e)}") from e
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
        elif "TableSize" in lcfg:  # sigmoid, tanh and the other table activations
            lcfg["TableSize"] = 2**cfg.table_bits
            _bounded_table_types(lcfg, _keras_activation(model, lname))
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
    pin = _quantizer_parents(model, hcfg)
    hls_model = None
    for iteration in range(1, 12):
        hls_model = _hls4ml_convert(model, hcfg, cfg, output_dir)
        report.iterations = iteration
        _exact_alpha_results(hls_model, cfg, report)
        changes = _exactness_changes(hls_model, hcfg, cfg, owned=report.exact_types, pin=pin)
        if not changes:
            break
        for lname, prec in list(changes.items()):
            # hls4ml splits a layer's activation out as `<name>_linear`; a quantizer reading that one is merged
            # into it (and lost) unless its type is set too.
            twin = f"{lname}_linear"
            if "result" in prec and lname in pin and twin in hcfg["LayerName"]:
                changes[twin] = {"result": prec["result"]}
        for lname, prec in changes.items():
            hcfg["LayerName"].setdefault(lname, {}).setdefault("Precision", {}).update(prec)
            report.exact_types.setdefault(lname, {}).update(prec)
        progress(f"exactness pass {iteration}: widened {', '.join(changes)}")
    else:
        raise ConversionError("fixed-point types did not settle after 11 passes; set layer_precision explicitly")
    report.softmax = _tune_softmax(hls_model, cfg)
    return hls_model, report


def _exact_alpha_results(hls_model, cfg: BuildConfig, report: ConversionReport) -> None:
    """QKeras' default alpha (auto_po2) becomes an hls4ml ApplyAlpha layer (x * 2^e per channel + bias) whose
    types hls4ml resets to 'auto' on every conversion, so the config cannot set them: its result type is set on
    the converted model instead (before anything is written), exact for the real scales and the input type."""
    if cfg.default_precision != "auto":
        return
    from hls4ml.model.types import ExponentPrecisionType

    for layer in hls_model.get_layers():
        if layer.class_name != "ApplyAlpha" or not layer.inputs:
            continue
        in_fmt = fmt_of(layer.get_input_variable().type.precision)
        scale, bias = layer.weights.get("scale"), layer.weights.get("bias")
        if in_fmt is None or scale is None:
            continue
        if isinstance(scale.type.precision, ExponentPrecisionType):
            pairs = po2_pairs(scale)
            s = np.where(pairs[:, 0] == 1, 1.0, -1.0) * np.exp2(pairs[:, 1])
        else:
            s = _weight_values(layer, "scale", layer.weights)
        b = np.zeros(1) if bias is None else np.ravel(_weight_values(layer, "bias", layer.weights))
        s = np.ravel(s)
        f_s, f_b = _frac_bits(s), _frac_bits(b)
        if f_s is None or f_b is None:
            continue
        frac = max(in_fmt.frac + f_s, f_b)
        ends = np.concatenate([s * in_fmt.min_value, s * in_fmt.max_value])
        integer = _signed_int_bits(float(ends.min()) + float(b.min()), float(ends.max()) + float(b.max()), frac)
        exact = FixedFormat(width=integer + frac, integer=integer, signed=True)
        out_type = layer.get_output_variable().type
        if _holds(fmt_of(out_type.precision), exact) or exact.width > MAX_EXACT_WIDTH:
            continue
        out_type.precision = _converted_precision(out_type.precision, exact)
        report.exact_types.setdefault(layer.name, {})["result"] = _hls_str(exact)


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
        raise ConversionError(f"hls4ml could not convert the model: {_last_line(e)}") from e


def _last_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def po2_pairs(var) -> np.ndarray:
    """A power-of-two weight variable as hls4ml writes it, one "{sign, exponent}" per value (sign 1 = positive):
    an (n, 2) float array."""
    return np.array([t.strip("{} ").split(",") for t in var], dtype=np.float64)


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


def _exactness_changes(hls_model, hcfg: dict, cfg: BuildConfig, owned: dict | None = None, pin=()) -> dict:
    """Layers whose types cannot hold the exact value -> the exact type strings.

    `owned` holds the types an earlier pass set (they may be widened again when an input widened); `pin` names
    layers whose result must be written into the config even when hls4ml's inference already holds it (see
    `_quantizer_parents`).
    """
    if cfg.default_precision != "auto":
        return {}
    owned = owned or {}
    changes: dict = {}
    layer_cfg = hcfg["LayerName"]
    for layer in hls_model.get_layers():
        user = cfg.layer_precision.get(layer.name, {}) if cfg.layer_precision else {}
        configured = layer_cfg.get(layer.name, {}).get("Precision", {})
        if not isinstance(configured, dict):
            continue
        in_vars = [layer.get_input_variable(i) for i in layer.inputs] if layer.inputs else []
        if not in_vars or any(v is None for v in in_vars):
            continue  # the model's inputs
        in_fmts = [fmt_of(v.type.precision) for v in in_vars]
        if any(f is None for f in in_fmts):
            continue
        exact = _exact_types(layer, in_fmts)
        want = {}
        for key, fmt in exact.items():
            if key in user or not (configured.get(key, "auto") == "auto" or key in owned.get(layer.name, {})):
                continue
            forced = key == "result" and layer.name in pin and configured.get(key, "auto") == "auto"
            if forced or not _holds(_current_format(layer, key), fmt):
                want[key] = _hls_str(fmt)
        if want:
            changes[layer.name] = want
    return changes


def _exact_types(layer, in_fmts: list) -> dict:
    """The per-layer-kind rule: {type key ('result', 'accum', 'scale', 'bias'): FixedFormat} that makes the layer
    reproduce the model; {} where no rule applies (quantizers fix the type, or the layer cannot be exact)."""
    kind = layer.class_name
    if kind in MAC_LAYERS:
        exact = _exact_mac_format(layer, in_fmts[0])
        return {} if exact is None else {"accum": exact, "result": exact}
    if kind in ("DepthwiseConv1D", "DepthwiseConv2D"):
        exact = _exact_depthwise_format(layer, in_fmts[0])
        return {} if exact is None else {"accum": exact, "result": exact}
    if kind == "Activation":
        return {"result": in_fmts[0]} if layer.get_attr("activation") in PASS_THROUGH_ACTIVATIONS else {}
    if kind in ("Pooling1D", "Pooling2D", "GlobalPooling1D", "GlobalPooling2D"):
        return _exact_pool(layer, in_fmts[0])
    if kind == "BatchNormalization":  # not ApplyAlpha: hls4ml resets its types to auto on every conversion
        return _exact_batchnorm(layer, in_fmts[0])
    if kind in ("Merge", "Concatenate") and len(in_fmts) == 2:
        return _exact_merge(layer, *in_fmts)
    if kind in ("ParametrizedActivation", "LeakyReLU", "PReLU", "ThresholdedReLU"):
        return _exact_param_activation(layer, in_fmts[0])
    return {}


def _exact_param_activation(layer, in_fmt: FixedFormat) -> dict:
    """leaky_relu / PReLU: x where x > 0, else alpha * x (nnet_activation.h: the product assigned to res_T);
    thresholded relu passes x or 0. alpha is kept exactly when it has few fraction bits (powers of two, QKeras'
    negative_slope), else to 24 significant bits, like batch-normalisation scales."""
    fn = str(layer.get_attr("activation", "")).lower()
    if layer.class_name == "ThresholdedReLU" or fn in ("thresholdedrelu", "thresholded_relu"):
        return {"result": in_fmt}
    if layer.class_name == "PReLU":
        var = layer.weights.get("param")
        alpha = None if var is None else np.asarray(var.data, dtype=np.float64).ravel()
    elif fn in ("leaky_relu", "leakyrelu"):
        alpha = np.array([float(layer.get_attr("activ_param", 0.3))])
    else:
        return {}  # elu: a lookup table
    if alpha is None or not alpha.size:
        return {}
    a_fmt = _value_format(alpha)
    a = a_fmt.cast(alpha)
    frac = in_fmt.frac + a_fmt.frac
    ends = np.concatenate([[in_fmt.min_value, in_fmt.max_value, 0.0], a * in_fmt.min_value, a * in_fmt.max_value])
    integer = _signed_int_bits(float(ends.min()), float(ends.max()), frac)
    frac = min(frac, MAX_EXACT_WIDTH - integer)
    return {"param": a_fmt, "result": FixedFormat(width=integer + frac, integer=integer, signed=True)}


def _current_format(layer, key: str) -> FixedFormat | None:
    if key == "result":
        return fmt_of(layer.get_output_variable().type.precision)
    t = layer.get_attr(f"{key}_t")
    return fmt_of(t.precision) if t is not None else None


def _quantizer_parents(model, hcfg: dict) -> set:
    """Layers feeding a `QActivation(quantized_bits(...))`.

    hls4ml turns that quantizer into a linear activation with the quantizer's type, and its linear-activation
    merge then folds it into the layer before whenever that layer's result type is 'auto', dropping the
    quantizer's rounding and saturation. Writing the exact type into the parent's config keeps the activation.
    """
    names = set()
    for layer in model.layers:
        if type(layer).__name__ != "QActivation":
            continue
        act = getattr(layer, "quantizer", None) or layer.activation  # `activation` keeps the string form
        if type(act).__name__ != "quantized_bits" and not (isinstance(act, str) and act.startswith("quantized_bits")):
            continue
        for node in layer.inbound_nodes:
            parents = node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]
            for parent in parents:
                names.add(parent.name)
                fused = parent.get_config().get("activation")
                if isinstance(fused, str) and f"{parent.name}_{fused}" in hcfg["LayerName"]:
                    names.add(f"{parent.name}_{fused}")
    return names


def _exact_pool(layer, in_fmt: FixedFormat) -> dict:
    """Max pooling passes values through. Average pooling sums the window in accum_t, then divides by the number
    of values in place, truncating toward zero (nnet::avg): the accumulator needs the window sum's integer bits and
    the quotient's fraction bits. A power-of-two window divides exactly; any other leaves a remainder, made
    small (2^-16 of the input step) for the quantizer that follows."""
    if str(layer.get_attr("pool_op", "Max")).lower() == "max":
        return {"result": in_fmt}
    if layer.class_name.startswith("Global"):
        shape = layer.get_input_variable().shape
        window = int(np.prod(shape[:-1]))
    else:
        window = int(layer.get_attr("pool_width", 1)) * int(layer.get_attr("pool_height", 1))
    if window <= 1:
        return {"result": in_fmt}
    grow = math.ceil(math.log2(window))
    exact_div = window & (window - 1) == 0
    extra = grow if exact_div else grow + 16
    accum = FixedFormat(width=in_fmt.width + grow + extra, integer=in_fmt.integer + grow, signed=in_fmt.signed)
    result = FixedFormat(width=in_fmt.width + extra, integer=in_fmt.integer, signed=in_fmt.signed)
    if accum.width > MAX_EXACT_WIDTH:
        return {}
    return {"accum": accum, "result": result}


def _exact_batchnorm(layer, in_fmt: FixedFormat) -> dict:
    """x * scale + bias with the folded scale and bias (gamma / sqrt(var + eps), beta - mean * scale).

    The folded values are real numbers, so BN is not exact in general: scale and bias are kept exactly when they
    have few fraction bits, else rounded to 24 bits below their largest magnitude, which puts the error far below
    the LSB of any quantizer that follows. The result holds x * s + b exactly up to MAX_EXACT_WIDTH bits."""
    scale_var, bias_var = layer.weights.get("scale"), layer.weights.get("bias")
    if scale_var is None or bias_var is None:
        return {}
    s_fmt = _value_format(np.asarray(scale_var.data, dtype=np.float64))
    b_fmt = _value_format(np.asarray(bias_var.data, dtype=np.float64))
    s, b = s_fmt.cast(np.ravel(scale_var.data)), b_fmt.cast(np.ravel(bias_var.data))
    frac = max(in_fmt.frac + s_fmt.frac, b_fmt.frac)
    ends = np.stack([in_fmt.min_value * s + b, in_fmt.max_value * s + b])
    integer = _signed_int_bits(float(ends.min()), float(ends.max()), frac)
    frac = min(frac, MAX_EXACT_WIDTH - integer)
    return {"scale": s_fmt, "bias": b_fmt, "result": FixedFormat(width=integer + frac, integer=integer, signed=True)}


def _exact_merge(layer, a: FixedFormat, b: FixedFormat) -> dict:
    """The exact result of two fixed-point inputs (nnet_merge.h computes each op on the full ap_fixed result, then
    assigns it to res_T)."""
    op = str(layer.get_attr("op", "")).lower()
    signed = a.signed or b.signed
    # integer bits of each input in a signed frame, so a mixed signed/unsigned pair lines up
    ia = a.integer + (1 if signed and not a.signed else 0)
    ib = b.integer + (1 if signed and not b.signed else 0)
    frac = max(a.frac, b.frac)
    if op in ("add", "subtract"):
        integer = max(ia, ib) + 1
        signed = signed or op == "subtract"
        if op == "subtract" and not (a.signed or b.signed):
            integer += 1
    elif op == "average":
        integer, frac = max(ia, ib) + 1, frac + 1
    elif op == "multiply":
        return {"result": FixedFormat(width=a.width + b.width, integer=a.integer + b.integer, signed=signed)}
    elif op in ("maximum", "minimum") or op.startswith("concatenate"):
        integer = max(ia, ib)
    else:
        return {}
    if integer + frac > MAX_EXACT_WIDTH:
        return {}
    return {"result": FixedFormat(width=integer + frac, integer=integer, signed=signed)}


def _value_format(values: np.ndarray, significant: int = 24) -> FixedFormat:
    """A signed rounding type for constants: exact when they need few fraction bits, else `significant` bits below
    the largest magnitude."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    frac = _frac_bits(values, limit=16)
    if frac is None:
        frac = significant - (math.floor(math.log2(peak)) if peak > 0 else 0)
    integer = _signed_int_bits(float(values.min()) if values.size else 0.0, float(values.max()) if values.size else 0.0, frac)
    return FixedFormat(width=integer + frac, integer=integer, signed=True, rounding="RND", saturation="SAT")


def _signed_int_bits(lo: float, hi: float, frac: int) -> int:
    """Integer bits (sign included) of the narrowest signed type with `frac` fraction bits holding [lo, hi]."""
    integer = 1
    while not (-(2.0 ** (integer - 1)) <= lo and hi <= 2.0 ** (integer - 1) - 2.0**-frac):
        integer += 1
    return integer


def _exact_mac_format(layer, in_fmt: FixedFormat) -> FixedFormat | None:
    weights = layer.weights  # keyed by role ('weight', 'bias'); get_weights() names them by C++ variable
    w = _weight_values(layer, "weight", weights)
    b = _weight_values(layer, "bias", weights)
    if w is None:
        return None
    # hls4ml may hold a kernel flattened (a Dense without bias): the output count comes from the layer
    n_out = int(layer.get_attr("n_out", None) or layer.get_attr("n_filt", None) or w.shape[-1])
    if layer.get_attr("_weights_transposed", False) is True:
        w = np.moveaxis(w.reshape(np.asarray(weights["weight"].data).shape), 0, -1)
    w2 = w.reshape(-1, n_out)
    # the C++ reads the first n_out bias entries (hls4ml sizes a missing bias like the kernel)
    b = np.zeros(n_out) if b is None else b.reshape(-1)[:n_out]
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


def _exact_depthwise_format(layer, in_fmt: FixedFormat) -> FixedFormat | None:
    """A depthwise convolution is a one-output MAC per channel over its kernel positions (separable convolutions
    arrive split, their depthwise half with a zero bias): the type that holds every channel's sum exactly."""
    weights = layer.weights
    w = _weight_values(layer, "weight", weights)
    b = _weight_values(layer, "bias", weights)
    if w is None:
        return None
    n_chan = int(layer.get_attr("n_chan"))
    if w.size % n_chan:
        return None
    w2 = w.reshape(-1, n_chan)  # (taps, channels): Keras' (.., C, 1) kernel, or hls4ml's Resource (1, .., C)
    b = np.zeros(n_chan) if b is None else np.resize(b.reshape(-1), n_chan)
    f_w, f_b = _frac_bits(w2), _frac_bits(b)
    if f_w is None or f_b is None:
        return None
    frac = max(in_fmt.frac + f_w, f_b)
    lo_x, hi_x = in_fmt.min_value, in_fmt.max_value
    lo = float((b + np.minimum(w2 * lo_x, w2 * hi_x).sum(axis=0)).min())
    hi = float((b + np.maximum(w2 * lo_x, w2 * hi_x).sum(axis=0)).max())
    integer = _signed_int_bits(lo, hi, frac)
    if integer + frac > MAX_EXACT_WIDTH:
        return None
    return FixedFormat(width=integer + frac, integer=integer, signed=True)


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
        layer.set_attr("config_cpp", render_softmax_config(layer))
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


# Functions with a bounded range: hls4ml's default table and result types (fixed<18,8>, fixed<16,6>) spend 8 and
# 6 bits on an integer part they never use; these keep the same widths for fraction bits instead.
BOUNDED_TABLE_TYPES = {
    "sigmoid": ("fixed<18,2,RND,SAT>", "ufixed<16,0,RND,SAT>"),
    "tanh": ("fixed<18,2,RND,SAT>", "fixed<16,1,RND,SAT>"),
}


def _bounded_table_types(lcfg: dict, function: str) -> None:
    types = BOUNDED_TABLE_TYPES.get(function)
    prec = lcfg.setdefault("Precision", {})
    if types is None or not isinstance(prec, dict):
        return
    table, result = types
    if "table" in prec:
        prec["table"] = table
    if prec.get("result", "auto") == "auto":
        prec["result"] = result


def _keras_activation(model, lname: str) -> str:
    """The Keras function name of a layer's activation ('sigmoid', 'tanh', ...), '' when it has none."""
    try:
        act = getattr(model.get_layer(lname), "activation", None)
    except ValueError:
        return ""
    return str(getattr(act, "__name__", "") or "").lower()


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
