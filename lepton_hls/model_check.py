"""The front door: read a model's architecture (no TensorFlow, no hls4ml) and refuse, in seconds, anything the
compile flow cannot turn into a verified accelerator, by the user's own layer name.

Which Keras/QKeras classes are accepted comes from lepton_host.opset; the rules here only add what a class's
options must satisfy (dilation, data format, activation function, quantizer kind).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable

from lepton_host import opset

from .keras_io import ModelFiles, UnsupportedLayerError, architecture_layers

# Element-wise functions the engine runs: relu/linear natively, the rest as lookup tables (hls4ml's own code);
# those marked approximate are computed by hls4ml from lookup tables (never bit-exact with the float model).
ACTIVATIONS = ("linear", "relu", "softmax", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign", "hard_sigmoid")
APPROXIMATE = ("softmax", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign")
ACTIVATION_QUANTIZERS = ("quantized_relu", "quantized_bits", "quantized_tanh", "quantized_sigmoid", "binary",
                         "ternary", "binary_tanh", "ternary_tanh")
WEIGHT_QUANTIZERS = ("quantized_bits", "quantized_po2", "ternary")
BIAS_QUANTIZERS = ("quantized_bits",)
MERGE_CLASSES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate")
RECURRENT = ("SimpleRNN", "LSTM", "GRU", "QSimpleRNN", "QLSTM", "QGRU")
HINTS = {
    **{c: "recurrent layers are outside the fast engine, and hls4ml's LSTM C simulation does not compile with "
          "g++ 12; unroll the sequence into Dense layers or use Conv1D over time" for c in RECURRENT},
    "Sequential": "a model nested in a model: save the model with its layers inlined",
    "Functional": "a model nested in a model: save the model with its layers inlined",
    "Lambda": "arbitrary Python code cannot become hardware; express it with supported layers",
    "Dot": "hls4ml 1.3.0's precision inference fails on Dot with automatic types; use Multiply and a Dense with "
           "fixed weights",
}


@dataclass
class LayerCheck:
    name: str
    class_name: str
    quantizers: dict = field(default_factory=dict)  # role -> quantizer text
    result: str = ""  # the type it gets: a quantizer's, or "exact (derived at build)", or a table note
    refusal: str = ""


@dataclass
class CheckReport:
    source: str
    layers: list[LayerCheck]
    approximate: list[str]  # layers computed through lookup tables

    @property
    def refused(self) -> list[LayerCheck]:
        return [layer for layer in self.layers if layer.refusal]

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self) | {"ok": not self.refused}


# ---- quantizers as the architecture JSON holds them ----------------------------------------------------------
def quantizer_name(q) -> str | None:
    """`"quantized_bits(6,0,alpha=1)"` or `{"class_name": "quantized_bits", "config": {...}}` -> "quantized_bits"."""
    if q is None:
        return None
    if isinstance(q, dict):
        return str(q.get("class_name") or q.get("config", {}).get("name") or "")
    m = re.match(r"\s*(\w+)", str(q))
    return m.group(1) if m else str(q)


def quantizer_text(q) -> str:
    if isinstance(q, dict):
        cfg = q.get("config", {})
        args = [str(cfg[k]) for k in ("bits", "integer") if k in cfg]
        args += [f"{k}={cfg[k]}" for k in ("alpha", "negative_slope", "max_value", "threshold")
                 if cfg.get(k) not in (None, 0, 0.0)]
        return f"{q.get('class_name')}({','.join(args)})"
    return str(q).replace(" ", "")


def quantizer_type(q) -> str:
    """The fixed-point type a QKeras activation quantizer gives its result (as hls4ml maps it)."""
    name = quantizer_name(q)
    args = _quantizer_args(q)
    bits, integer = int(args.get("bits", 8)), int(args.get("integer", 0))
    if name == "quantized_bits":
        signed = bool(args.get("keep_negative", True))
        return f"{'fixed' if signed else 'ufixed'}<{bits},{integer + (1 if signed else 0)}>"
    if name == "quantized_relu":
        return f"ufixed<{bits},{integer}>" if not float(args.get("negative_slope", 0) or 0) else f"fixed<{bits + 1},{integer + 1}>"
    if name in ("binary", "binary_tanh"):
        return "1-bit (+-1)"
    if name in ("ternary", "ternary_tanh"):
        return "2-bit (-1, 0, 1)"
    if name in ("quantized_tanh", "quantized_sigmoid"):
        return f"{bits}-bit hard {name.split('_')[1]}"
    return name or ""


def _quantizer_args(q) -> dict:
    if isinstance(q, dict):
        return dict(q.get("config", {}))
    text = str(q)
    m = re.match(r"\s*\w+\((.*)\)\s*$", text)
    if not m:
        return {}
    out: dict = {}
    positional = ("bits", "integer", "symmetric", "keep_negative")
    for i, part in enumerate(p.strip() for p in m.group(1).split(",") if p.strip()):
        key, _, val = part.partition("=")
        if not _:
            key, val = (positional[i] if i < len(positional) else f"arg{i}"), part
        try:
            out[key.strip()] = json.loads(val.strip().replace("True", "true").replace("False", "false"))
        except ValueError:
            out[key.strip()] = val.strip()
    return out


# ---- per-class rules: return a refusal reason, or "" -----------------------------------------------------------
Rule = Callable[[dict, LayerCheck], str]


def _activation_rule(cfg: dict, chk: LayerCheck) -> str:
    act = cfg.get("activation", "linear")
    if act is None:
        return ""
    name = quantizer_name(act)
    if isinstance(act, str) and "(" in act or name in ACTIVATION_QUANTIZERS:
        if name not in ACTIVATION_QUANTIZERS:
            return f"activation quantizer {name!r} (supported: {', '.join(ACTIVATION_QUANTIZERS)})"
        reason = _unsigned_bits(act, "activation")
        if reason:
            return reason
        chk.quantizers["activation"] = quantizer_text(act)
        chk.result = quantizer_type(act)
        return ""
    if name not in ACTIVATIONS:
        return f"activation {name!r} (supported: {', '.join(ACTIVATIONS)})"
    if name != "linear":
        chk.quantizers["activation"] = name
    if name in APPROXIMATE:
        chk.result = f"{name} by lookup table (approximate)"
    return ""


def _weights_rule(cfg: dict, chk: LayerCheck) -> str:
    for role in ("kernel_quantizer", "bias_quantizer", "depthwise_quantizer", "pointwise_quantizer"):
        q = cfg.get(role)
        if q is None:
            continue
        name = quantizer_name(q)
        allowed = BIAS_QUANTIZERS if role == "bias_quantizer" else WEIGHT_QUANTIZERS
        if name not in allowed:
            why = " (binary weights become XNOR products, which the fast engine does not evaluate)" if "binary" in str(name) else ""
            if role == "bias_quantizer" and name in WEIGHT_QUANTIZERS:
                why = " (hls4ml's dense kernels cannot add a power-of-two bias)"
            return f"{role} {name!r}{why} (supported: {', '.join(allowed)})"
        reason = _unsigned_bits(q, role)
        if reason:
            return reason
        chk.quantizers[role.replace("_quantizer", "")] = quantizer_text(q)
    return ""


def _unsigned_bits(q, role: str) -> str:
    """quantized_bits(..., keep_negative=False): hls4ml 1.3.0 gives it a signed type one integer bit short, so
    values are neither clipped at 0 nor on the right grid."""
    if quantizer_name(q) == "quantized_bits" and str(_quantizer_args(q).get("keep_negative", True)).lower() in (
        "false", "0"
    ):
        alt = "quantized_relu(bits, integer)" if role == "activation" else "a signed quantized_bits(bits, integer)"
        return f"{role} quantized_bits with keep_negative=False (hls4ml 1.3.0 maps it to the wrong type); use {alt}"
    return ""


def _channels_last(cfg: dict, chk: LayerCheck) -> str:
    fmt = cfg.get("data_format")
    return "" if fmt in (None, "channels_last") else f"data_format {fmt!r} (only channels_last)"


def _no_dilation(cfg: dict, chk: LayerCheck) -> str:
    rate = cfg.get("dilation_rate", 1)
    rates = rate if isinstance(rate, (list, tuple)) else [rate]
    if any(int(r) != 1 for r in rates):
        return f"dilation_rate {rate} (only 1)"
    if int(cfg.get("groups", 1) or 1) != 1:
        return f"groups={cfg.get('groups')} (only 1)"
    return ""


def _depthwise(cfg: dict, chk: LayerCheck) -> str:
    if int(cfg.get("depth_multiplier", 1) or 1) != 1:
        return f"depth_multiplier={cfg['depth_multiplier']} (hls4ml's depthwise kernels take 1)"
    strides = cfg.get("strides", 1)
    strides = strides if isinstance(strides, (list, tuple)) else [strides]
    if "Separable" in chk.class_name and len(set(strides)) > 1:
        return f"strides {tuple(strides)} (TensorFlow on a CPU cannot run a separable convolution with unequal strides, so the model cannot be verified)"
    return _conv(cfg, chk)


def _upsampling(cfg: dict, chk: LayerCheck) -> str:
    interp = cfg.get("interpolation", "nearest")
    return _channels_last(cfg, chk) or ("" if interp == "nearest" else f"interpolation {interp!r} (only nearest)")


def _permute(cfg: dict, chk: LayerCheck) -> str:
    # hls4ml's Transpose template substitutes the layer's name where it means its `perm` attribute
    return "the name 'perm' (it clashes with hls4ml's Transpose template; rename the layer)" if chk.name == "perm" else ""


def _mac(cfg: dict, chk: LayerCheck) -> str:
    reason = _weights_rule(cfg, chk) or _activation_rule(cfg, chk)
    if not reason and not chk.result:
        chk.result = "exact (derived at build)" if chk.class_name.startswith("Q") else "derived at build"
    return reason


def _conv(cfg: dict, chk: LayerCheck) -> str:
    return _channels_last(cfg, chk) or _no_dilation(cfg, chk) or _mac(cfg, chk)


def _qactivation(cfg: dict, chk: LayerCheck) -> str:
    return _activation_rule(cfg, chk)


def _relu_layer(cfg: dict, chk: LayerCheck) -> str:
    if cfg.get("max_value") is not None:
        return f"ReLU(max_value={cfg['max_value']}) (hls4ml ignores max_value; use QActivation(quantized_relu(bits, integer)))"
    if float(cfg.get("threshold", 0) or 0) != 0:
        return f"ReLU(threshold={cfg['threshold']}) (use ThresholdedReLU)"
    return ""


def _batchnorm(cfg: dict, chk: LayerCheck) -> str:
    for role in ("beta_quantizer", "gamma_quantizer", "mean_quantizer", "variance_quantizer"):
        q = cfg.get(role)
        if q is not None and quantizer_name(q) != "quantized_bits":
            return (f"{role} {quantizer_name(q)!r} (hls4ml ignores it and uses the raw statistics, so the hardware "
                    "would differ from the model; set QBatchNormalization's quantizers to None, or use "
                    "BatchNormalization: the build sizes the folded scale and bias itself)")
    axis = cfg.get("axis", -1)
    if isinstance(axis, list):
        if len(axis) != 1:
            return f"axis {axis} (normalisation over one axis, the channels)"
        axis = axis[0]
    if not isinstance(axis, int) or axis == 0:
        return f"axis {cfg.get('axis')} (only the channel axis, channels_last)"
    chk.result = "scale and bias sized from the real statistics (derived at build)"
    return ""


def _softmax_layer(cfg: dict, chk: LayerCheck) -> str:
    axis = cfg.get("axis", -1)
    if axis not in (-1, [-1]):
        return f"softmax over axis {axis} (only the last axis)"
    chk.result = "softmax by lookup tables (approximate)"
    return ""


def _approximate(what: str) -> Rule:
    def rule(cfg: dict, chk: LayerCheck) -> str:
        chk.result = f"{what} by lookup table (approximate)"
        return ""

    return rule


def _plain(cfg: dict, chk: LayerCheck) -> str:
    return ""


_SPECIFIC: dict[str, Rule] = {
    "Dense": _mac,
    "QDense": _mac,
    "Conv1D": _conv,
    "Conv2D": _conv,
    "QConv1D": _conv,
    "QConv2D": _conv,
    "DepthwiseConv1D": _depthwise,
    "DepthwiseConv2D": _depthwise,
    "QDepthwiseConv2D": _depthwise,
    "SeparableConv1D": _depthwise,
    "SeparableConv2D": _depthwise,
    "QSeparableConv1D": _depthwise,
    "QSeparableConv2D": _depthwise,
    "Permute": _permute,
    "PReLU": lambda cfg, chk: (f"shared_axes={cfg['shared_axes']} (hls4ml takes one alpha per element: shared_axes=None)"
                               if cfg.get("shared_axes") is not None else ""),

    "UpSampling1D": _upsampling,
    "UpSampling2D": _upsampling,
    "Activation": _activation_rule,
    "QActivation": _qactivation,
    "ReLU": _relu_layer,
    "BatchNormalization": _batchnorm,
    "QBatchNormalization": _batchnorm,
    "Softmax": _softmax_layer,
    "ELU": _approximate("elu"),
    **{c: _channels_last for c in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
                                   "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "ZeroPadding1D",
                                   "ZeroPadding2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
                                   "GlobalAveragePooling1D", "GlobalAveragePooling2D", "Cropping1D", "Cropping2D")},
}
KERAS_RULES: dict[str, Rule] = {
    cls: _SPECIFIC.get(cls, _plain) for cls in (*opset.keras_classes(), *opset.DROPPED_KERAS_CLASSES)
}


def supported_classes() -> list[str]:
    return sorted(set(opset.keras_classes()) - {"InputLayer"})


def check_model(files: ModelFiles, io_type: str = "io_parallel") -> CheckReport:
    """Every layer of the architecture with its quantizers and type; refusals named per layer."""
    try:
        arch = json.loads(files.architecture_json)
    except json.JSONDecodeError as e:
        raise UnsupportedLayerError(f"{files.source}: the architecture is not valid JSON: {e}") from None
    layers = architecture_layers(arch)
    if not layers:
        raise UnsupportedLayerError(f"{files.source}: the architecture lists no layers")
    checks = []
    for layer in layers:
        cls = str(layer.get("class_name"))
        cfg = layer.get("config", {}) or {}
        chk = LayerCheck(name=str(cfg.get("name", layer.get("name", "?"))), class_name=cls)
        rule = KERAS_RULES.get(cls)
        if rule is None:
            chk.refusal = f"class {cls} is not supported" + (f" ({HINTS[cls]})" if cls in HINTS else "")
        else:
            reason = rule(cfg, chk)
            n_in = len(_sources(layer))
            if not reason:
                reason = _name_clash(chk.name, cfg)
            if not reason and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", chk.name):
                reason = (f"the name {chk.name!r} (hls4ml writes layer names into C++ as identifiers: letters, "
                          "digits and '_'); rename the layer")
            if not reason and cls in MERGE_CLASSES and n_in != 2:
                reason = f"{n_in} inputs (hls4ml merges exactly two tensors; chain two-input {cls} layers)"
            if reason:
                chk.refusal = f"{cls} with {reason}"
            elif cls in opset.DROPPED_KERAS_CLASSES:
                chk.result = "removed (no effect at inference)"
        checks.append(chk)
    if io_type == "io_stream":
        _stream_hazards(layers, checks)
    model_refusal = _model_level(arch)
    if model_refusal:
        checks.append(LayerCheck(name="(model)", class_name=str(arch.get("class_name")), refusal=model_refusal))
    approximate = [c.name for c in checks if "approximate" in c.result]
    return CheckReport(source=files.source, layers=checks, approximate=approximate)


# hls4ml reads a layer's weights as the first of its variables whose full name ("<layer>/<variable>:0") contains
# the wanted variable's name, so a layer named after a variable can read the wrong array (a bias-less "nobias"
# layer reads its kernel as its bias).
WEIGHT_VARIABLES = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance", "alpha")


def _name_clash(name: str, cfg: dict) -> str:
    hit = next((v for v in WEIGHT_VARIABLES if v in name.lower()), None)
    if hit is None:
        return ""
    return (f"the name {name!r}, which contains the weight name {hit!r} (hls4ml finds a layer's weights by that "
            "substring and would read the wrong array); rename the layer")


def check_loaded(model) -> None:
    """Rules that need the built Keras model (shapes): raise one line for the first layer they refuse."""
    for layer in model.layers:
        cls = type(layer).__name__
        shape = getattr(layer, "input_shape", None)
        if cls in ("Dense", "QDense") and isinstance(shape, tuple) and len(shape) > 2:
            raise UnsupportedLayerError(
                f"layer {layer.name!r}: {cls} on a {len(shape) - 1}-D input {shape[1:]} (hls4ml 1.3.0 computes it "
                "wrongly). Alternatives: Flatten before it, or Conv1D with kernel_size=1"
            )


def _stream_hazards(layers: list, checks: list[LayerCheck]) -> None:
    """hls4ml 1.3.0's io_stream inserts a zero-padding layer before a 'same' convolution; when that convolution
    shares its input with another layer, the padding is wired to the wrong consumer and the generated C++
    computes something else."""
    readers: dict[str, int] = {}
    for layer in layers:
        for src in _sources(layer):
            readers[src] = readers.get(src, 0) + 1
    for layer, chk in zip(layers, checks):
        cfg = layer.get("config", {}) or {}
        if chk.refusal or "Conv" not in chk.class_name or cfg.get("padding") != "same":
            continue
        shared = [s for s in _sources(layer) if readers.get(s, 0) > 1]
        if shared:
            chk.refusal = (f"{chk.class_name} with padding='same' reading {shared[0]!r}, which other layers read "
                           "too (hls4ml's io_stream miswires the padding it inserts; use io_parallel, padding="
                           "'valid' with an explicit ZeroPadding layer, or give the branch its own copy)")


def _sources(layer: dict) -> list[str]:
    out = []
    for node in layer.get("inbound_nodes", []) or []:
        for ref in node if isinstance(node, list) else [node]:
            if isinstance(ref, list) and ref:
                out.append(str(ref[0]))
            elif isinstance(ref, dict):  # Keras 3 style
                out.extend(str(a.get("config", {}).get("keras_history", ["?"])[0]) for a in ref.get("args", []))
    return out


def _model_level(arch: dict) -> str:
    cfg = arch.get("config", {})
    if isinstance(cfg, dict) and arch.get("class_name") in ("Functional", "Model"):
        ins, outs = cfg.get("input_layers", []), cfg.get("output_layers", [])
        if len(ins) > 1 or len(outs) > 1:
            return f"{len(ins)} inputs and {len(outs)} outputs (the accelerator has one input and one output port)"
    return ""


def refuse_unsupported(report: CheckReport) -> None:
    """Raise one line naming the first refused layer, what is supported, and a hint."""
    bad = report.refused
    if not bad:
        return
    first = bad[0]
    more = f" (and {len(bad) - 1} more: {', '.join(b.name for b in bad[1:4])})" if len(bad) > 1 else ""
    hint = _hint(first)
    tail = ""
    if first.class_name not in KERAS_RULES:
        tail = f" Supported alternatives: {_alternatives(first.class_name)} (all: `lepton-hls check --supported`)."
    raise UnsupportedLayerError(f"{report.source}: layer {first.name!r}: {first.refusal}{more}.{tail}{hint}")


def _alternatives(cls: str) -> str:
    """The supported classes nearest to a refused one."""
    families = (
        (("RNN", "LSTM", "GRU", "TimeDistributed"), ("Conv1D", "QConv1D", "Dense", "QDense")),
        (("Conv", "Locally"), ("Conv1D", "Conv2D", "QConv1D", "QConv2D", "DepthwiseConv2D", "SeparableConv2D")),
        (("Pool",), ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
                     "GlobalAveragePooling2D", "GlobalMaxPooling2D")),
        (("Norm",), ("BatchNormalization", "QBatchNormalization")),
        (("Dense", "Embedding", "Dot"), ("Dense", "QDense", "Multiply")),
        (("Activation", "ReLU", "ELU"), ("Activation", "QActivation", "ReLU", "LeakyReLU", "ELU", "PReLU")),
        (("Add", "Concat", "Multiply", "Subtract", "Average", "Maximum", "Minimum"),
         ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate")),
    )
    for keys, alts in families:
        if any(k in cls for k in keys):
            return ", ".join(a for a in alts if a in KERAS_RULES)
    return "the layers in the README's table"


def _hint(chk: LayerCheck) -> str:
    if chk.class_name in HINTS:
        return ""
    if "quantizer" in chk.refusal:
        return (" Hint: give QActivation quantizers as strings in .json (e.g. \"quantized_relu(6)\"), or use the "
                "full .h5")
    if chk.class_name not in KERAS_RULES:
        return " Hint: `lepton-hls check MODEL` lists every layer and what it becomes"
    return ""


def support_table_markdown() -> str:
    """The README's table of supported layers and quantizers, rendered from the opset (tests hold the README to
    it)."""
    lines = ["| kind | Keras / QKeras layers | what it computes | bit-exact | RTL tracer |", "|---|---|---|---|---|"]
    for kind in opset.KINDS:
        if kind.op == "input" or not kind.keras_classes:
            continue
        exact = "yes" if kind.exact else "no: lookup tables, agreement measured"
        if kind.op == "lookup":
            exact = f"yes, except {', '.join(f for f in APPROXIMATE if f != 'softmax')} (tables)"
        rtl = "yes" if not kind.rtl else "refused"
        lines.append(f"| `{kind.op}` | {', '.join(kind.keras_classes)} | {kind.summary} | {exact} | {rtl} |")
    lines += [
        f"| (removed) | {', '.join(opset.DROPPED_KERAS_CLASSES)} | no effect at inference | - | - |",
        "",
        f"Weight quantizers: {', '.join(WEIGHT_QUANTIZERS)}; bias quantizers: {', '.join(BIAS_QUANTIZERS)} "
        "(signed: `keep_negative=False` is refused, use quantized_relu for unsigned activations). "
        f"Activation quantizers (QActivation, or a layer's "
        f"`activation=`): {', '.join(ACTIVATION_QUANTIZERS)}. Keras activations: {', '.join(ACTIVATIONS)}.",
    ]
    return "\n".join(lines) + "\n"
