"""The layer kinds lepton-hls compiles, each declared once.

Every kind is an op of the engine IR (docs/engine-ir.md). Its entry says which hls4ml layer classes the build
exports as it, which Keras/QKeras layer classes a user writes to get it, whether the open-source RTL tracer
follows it, and whether its result can be bit-exact. The build side's exporter, exact-type rules, model check
and RTL tracer, and the board side's engine, are each keyed by these names; `tests/test_opset.py` holds them
to this table, and the supported sets shown to users are derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpKind:
    op: str  # the engine IR op
    summary: str  # one line for users: what it computes
    hls4ml_classes: tuple[str, ...]  # hls4ml layer classes exported as this op
    keras_classes: tuple[str, ...]  # Keras / QKeras classes a model may use to get it
    exact: bool = True  # False: approximated by lookup tables (error measured and reported, never exact)
    rtl: str = ""  # empty: the RTL tracer follows it; otherwise why it refuses the op


KINDS: tuple[OpKind, ...] = (
    OpKind("input", "the accelerator's input port", ("Input",), ("InputLayer",)),
    OpKind(
        "dense",
        "fully connected layer: products, bias, accumulation",
        ("Dense",),
        ("Dense", "QDense"),
    ),
    OpKind(
        "conv1d",
        "1D convolution (any padding, stride; pointwise too)",
        ("Conv1D", "PointwiseConv1D"),
        ("Conv1D", "QConv1D"),
    ),
    OpKind(
        "conv2d",
        "2D convolution (any padding, stride; pointwise too)",
        ("Conv2D", "PointwiseConv2D"),
        ("Conv2D", "QConv2D"),
    ),
    OpKind(
        "activation",
        "relu and linear activations, QKeras quantized_relu / quantized_bits as activations",
        ("Activation",),
        ("Activation", "ReLU", "QActivation"),
    ),
    OpKind(
        "lookup",
        "any other element-wise activation (sigmoid, tanh, elu, selu, softplus, softsign, hard_sigmoid, "
        "leaky_relu, thresholded relu, PReLU, QKeras quantized_tanh / quantized_sigmoid / binary / ternary): "
        "the C simulation's own function tabulated over its input type",
        (
            "Activation",
            "ParametrizedActivation",
            "LeakyReLU",
            "ThresholdedReLU",
            "ELU",
            "PReLU",
            "HardActivation",
            "TernaryTanh",
            "BatchNormalizationQuantizedTanh",
        ),
        ("Activation", "QActivation", "LeakyReLU", "ELU", "PReLU", "ThresholdedReLU"),
        rtl="element-wise lookup tables are outside the RTL tracer's coverage",
    ),
    OpKind(
        "batchnorm",
        "batch normalization (standalone; folded into the layer before it when hls4ml can), and the per-channel "
        "scale of QKeras' default alpha (auto_po2)",
        ("BatchNormalization", "ApplyAlpha"),
        ("BatchNormalization", "QBatchNormalization"),
    ),
    OpKind(
        "pool1d",
        "max / average pooling over one axis",
        ("Pooling1D",),
        ("MaxPooling1D", "AveragePooling1D", "MaxPool1D", "AvgPool1D"),
        rtl="",
    ),
    OpKind(
        "pool2d",
        "max / average pooling over two axes",
        ("Pooling2D",),
        ("MaxPooling2D", "AveragePooling2D", "MaxPool2D", "AvgPool2D"),
    ),
    OpKind(
        "reshape",
        "reshape / flatten: the values unchanged",
        ("Reshape", "Repack"),
        ("Reshape", "Flatten"),
    ),
    OpKind(
        "zeropad",
        "zero padding around the spatial axes",
        ("ZeroPadding1D", "ZeroPadding2D"),
        ("ZeroPadding1D", "ZeroPadding2D"),
    ),
    OpKind(
        "softmax",
        "softmax by hls4ml's exp and 1/x lookup tables",
        ("Softmax",),
        ("Softmax", "Activation", "QActivation"),
        exact=False,
    ),
    OpKind(
        "merge",
        "element-wise add, subtract, multiply, average, maximum, minimum of two tensors",
        ("Merge",),
        ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"),
        rtl="the RTL tracer follows single-chain models only; merge layers join two branches",
    ),
    OpKind(
        "concatenate",
        "two tensors joined along any axis (1D, 2D, 3D)",
        ("Concatenate",),
        ("Concatenate",),
        rtl="the RTL tracer follows single-chain models only; concatenate joins two branches",
    ),
    OpKind(
        "dot",
        "dot product of two vectors (the engine evaluates hls4ml's Dot; the model check refuses Keras Dot, whose "
        "automatic types hls4ml 1.3.0 cannot infer)",
        ("Dot",),
        (),
        rtl="the RTL tracer follows single-chain models only; dot joins two branches",
    ),
    OpKind(
        "clone",
        "io_stream's copy of a stream that several layers read: the values unchanged",
        ("Clone",),
        (),
        rtl="the RTL tracer follows io_parallel models only; io_stream inserts clones for branches",
    ),
    OpKind(
        "crop",
        "cropping along the spatial axes: the kept values unchanged",
        ("Cropping1D", "Cropping2D"),
        ("Cropping1D", "Cropping2D"),
        rtl="cropping is outside the RTL tracer's coverage",
    ),
    OpKind(
        "upsample",
        "nearest-neighbour upsampling (bilinear is refused)",
        ("Resize",),
        ("UpSampling1D", "UpSampling2D"),
        rtl="upsampling is outside the RTL tracer's coverage",
    ),
    OpKind(
        "transpose",
        "permutation of the non-batch axes",
        ("Transpose",),
        ("Permute",),
        rtl="transposes are outside the RTL tracer's coverage",
    ),
    OpKind(
        "global_pool",
        "global max / average pooling over all spatial positions of each channel",
        ("GlobalPooling1D", "GlobalPooling2D"),
        ("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
         "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalAvgPool1D", "GlobalAvgPool2D"),
        rtl="global pooling is outside the RTL tracer's coverage",
    ),
    OpKind(
        "depthwise1d",
        "1D depthwise convolution (depth multiplier 1); separable convolutions become depthwise + pointwise",
        ("DepthwiseConv1D",),
        ("DepthwiseConv1D", "SeparableConv1D", "QSeparableConv1D"),
        rtl="depthwise convolutions are outside the RTL tracer's coverage",
    ),
    OpKind(
        "depthwise2d",
        "2D depthwise convolution (depth multiplier 1); separable convolutions become depthwise + pointwise",
        ("DepthwiseConv2D",),
        ("DepthwiseConv2D", "QDepthwiseConv2D", "SeparableConv2D", "QSeparableConv2D"),
        rtl="depthwise convolutions are outside the RTL tracer's coverage",
    ),
)

# Keras layers hls4ml removes because they do nothing at inference time (hls4ml 1.3.0 skips Dropout only).
DROPPED_KERAS_CLASSES = ("Dropout",)

BY_OP: dict[str, OpKind] = {k.op: k for k in KINDS}


def ops() -> tuple[str, ...]:
    return tuple(BY_OP)


def hls4ml_classes() -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for k in KINDS:
        seen.update(dict.fromkeys(k.hls4ml_classes))
    return tuple(seen)


def keras_classes() -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for k in KINDS:
        seen.update(dict.fromkeys(k.keras_classes))
    return tuple(sorted(seen))
