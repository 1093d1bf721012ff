"""Tiny models, one or more per layer kind of lepton_host.opset, written as a user would write them.

They carry random weights (quantized by their QKeras quantizers; batch-normalisation statistics set to
non-trivial values), build in seconds, and exist to show that every kind builds with the default config,
verifies, and runs on the fast engine bit for bit: the slow test suite builds each, and
`benchmarks/coverage.py` tabulates the results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class LayerModel:
    name: str
    ops: tuple[str, ...]  # opset ops the converted model contains (besides input)
    make: Callable  # () -> tf.keras.Model
    config: dict = field(default_factory=dict)  # build config overrides (e.g. io_type)
    note: str = ""


def _q(bits: int = 6):
    from qkeras import quantized_bits

    return dict(kernel_quantizer=quantized_bits(bits, 0, alpha=1), bias_quantizer=quantized_bits(bits, 0, alpha=1))


def _seed(n: int) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(n)


def _bn_stats(model, name: str, seed: int) -> None:
    layer = model.get_layer(name)
    n = layer.get_weights()[0].shape[0]
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), rng.uniform(0.3, 2, n)])


def mlp():
    import tensorflow as tf
    from qkeras import QActivation, QDense

    _seed(10)
    inp = tf.keras.Input((10,), name="x")
    h = QDense(16, name="fc1", **_q())(inp)
    h = QActivation("quantized_relu(6,2)", name="relu1")(h)
    h = QDense(4, name="fc2", **_q())(h)
    out = tf.keras.layers.Activation("softmax", name="sm")(h)
    return tf.keras.Model(inp, out)


def dense_bn_quantizer_output():
    import tensorflow as tf
    from qkeras import QActivation, QDense

    _seed(11)
    inp = tf.keras.Input((8,), name="x")
    h = QDense(12, name="fc1", **_q())(inp)
    h = tf.keras.layers.BatchNormalization(name="bn")(h)
    h = QActivation("quantized_relu(8,3)", name="relu1")(h)
    h = QDense(3, name="fc2", **_q())(h)
    out = QActivation("quantized_bits(8,3,alpha=1)", name="qb")(h)
    m = tf.keras.Model(inp, out)
    _bn_stats(m, "bn", 11)
    return m


def conv1d_avgpool():
    import tensorflow as tf
    from qkeras import QActivation, QConv1D, QDense

    _seed(12)
    inp = tf.keras.Input((16, 2), name="x")
    h = QConv1D(4, 3, padding="same", name="conv", **_q())(inp)
    h = QActivation("quantized_relu(6,2)", name="relu1")(h)
    h = tf.keras.layers.AveragePooling1D(2, name="avg")(h)
    h = tf.keras.layers.MaxPooling1D(2, padding="same", name="maxp")(h)
    h = tf.keras.layers.Flatten(name="flat")(h)
    out = QDense(3, name="fc", **_q())(h)
    return tf.keras.Model(inp, out)


def conv2d_strided():
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDense

    _seed(13)
    inp = tf.keras.Input((8, 8, 1), name="x")
    h = tf.keras.layers.ZeroPadding2D(1, name="pad")(inp)
    h = QConv2D(4, 3, strides=2, padding="same", name="conv", **_q())(h)
    h = QActivation("quantized_relu(6,2)", name="relu1")(h)
    h = tf.keras.layers.MaxPooling2D(name="pool")(h)
    h = tf.keras.layers.AveragePooling2D(2, padding="same", name="avg")(h)
    h = tf.keras.layers.Reshape((-1,), name="rs")(h)
    out = QDense(3, name="fc", **_q())(h)
    return tf.keras.Model(inp, out)


def activations():
    import tensorflow as tf
    from qkeras import QActivation, QDense

    _seed(14)
    L = tf.keras.layers
    inp = tf.keras.Input((6,), name="x")
    h = QDense(8, name="fc1", **_q())(inp)
    h = QActivation("quantized_tanh(6,0)", name="qtanh")(h)
    h = QDense(8, name="fc2", **_q())(h)
    h = L.LeakyReLU(0.125, name="leaky")(h)
    h = QActivation("quantized_bits(6,2,alpha=1)", name="qb")(h)
    h = QDense(6, name="fc3", **_q())(h)
    h = L.PReLU(alpha_initializer=tf.keras.initializers.RandomUniform(0.05, 0.5), name="prelu")(h)
    h = QActivation("quantized_bits(6,2,alpha=1)", name="qb2")(h)
    h = QDense(4, name="fc4", **_q())(h)
    out = QActivation("ternary", name="tern")(h)
    return tf.keras.Model(inp, out)


def sigmoid_tanh():
    import tensorflow as tf
    from qkeras import QDense

    _seed(15)
    inp = tf.keras.Input((6,), name="x")
    h = QDense(8, name="fc1", **_q())(inp)
    h = tf.keras.layers.Activation("tanh", name="th")(h)
    h = QDense(1, name="fc2", **_q())(h)
    out = tf.keras.layers.Activation("sigmoid", name="sig")(h)
    model = tf.keras.Model(inp, out)
    # A binary classifier's decision is what its sigmoid promises: train briefly so that, as in use, outputs are
    # not all piled up at 0.5 (where a table's dead zone around 0 flips decisions of untrained weights).
    rng = np.random.default_rng(15)
    x = rng.standard_normal((2000, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(np.float32)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.02), loss="binary_crossentropy")
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    return model


def merge_branches():
    import tensorflow as tf
    from qkeras import QActivation, QDense

    _seed(16)
    L = tf.keras.layers
    inp = tf.keras.Input((8,), name="x")
    a = QActivation("quantized_relu(6,2)", name="ra")(QDense(6, name="fa", **_q())(inp))
    b = QActivation("quantized_relu(6,2)", name="rb")(QDense(6, name="fb", **_q())(inp))
    s = L.Add(name="add")([a, b])
    d = L.Subtract(name="sub")([a, b])
    m = L.Multiply(name="mul")([a, b])
    v = L.Average(name="avg")([a, b])
    mx = L.Maximum(name="max")([a, b])
    mn = L.Minimum(name="min")([a, b])
    c = L.Concatenate(name="cat1")([s, d])
    c = L.Concatenate(name="cat2")([c, m])
    c = L.Concatenate(name="cat3")([c, L.Concatenate(name="cat4")([v, mx])])
    c = L.Concatenate(name="cat5")([c, mn])
    out = QDense(3, name="fc", **_q())(c)
    return tf.keras.Model(inp, out)


def spatial():
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDepthwiseConv2D, QDense

    _seed(17)
    L = tf.keras.layers
    inp = tf.keras.Input((8, 8, 2), name="x")
    h = L.Cropping2D(((1, 1), (1, 1)), name="crop")(inp)
    h = QDepthwiseConv2D(3, depthwise_quantizer="quantized_bits(6,0,alpha=1)",
                         bias_quantizer="quantized_bits(6,0,alpha=1)", name="dw")(h)
    h = QActivation("quantized_relu(6,2)", name="relu1")(h)
    h = L.UpSampling2D(2, name="up")(h)
    h = QConv2D(3, 1, name="pw", **_q())(h)
    h = QActivation("quantized_relu(6,2)", name="relu2")(h)
    h = L.Permute((2, 1, 3), name="permute")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = QDense(2, name="fc", **_q())(h)
    return tf.keras.Model(inp, out)


def separable_1d():
    import tensorflow as tf
    from qkeras import QActivation, QDense, QSeparableConv1D

    _seed(18)
    L = tf.keras.layers
    inp = tf.keras.Input((12, 3), name="x")
    h = QSeparableConv1D(4, 3, depthwise_quantizer="quantized_bits(6,0,alpha=1)",
                         pointwise_quantizer="quantized_bits(6,0,alpha=1)",
                         bias_quantizer="quantized_bits(6,0,alpha=1)", name="sep")(inp)
    h = QActivation("quantized_relu(6,2)", name="relu1")(h)
    h = L.UpSampling1D(2, name="up")(h)
    h = L.Cropping1D((1, 1), name="crop")(h)
    h = L.GlobalMaxPooling1D(name="gmp")(h)
    out = QDense(2, name="fc", **_q())(h)
    return tf.keras.Model(inp, out)


def default_alpha_gap():
    """QKeras' default alpha (auto_po2, hls4ml's ApplyAlpha) on a conv and a dense, and a global average over 9
    positions (not a power of two: never bit-exact, argmax agreement instead)."""
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDense, quantized_bits

    _seed(20)
    inp = tf.keras.Input((5, 5, 1), name="x")
    h = QConv2D(4, 3, kernel_quantizer=quantized_bits(6, 0), bias_quantizer=quantized_bits(6, 0), name="conv")(inp)
    h = QActivation("quantized_relu(6,2)", name="relu1")(h)
    h = tf.keras.layers.GlobalAveragePooling2D(name="gap")(h)
    h = QDense(3, kernel_quantizer=quantized_bits(6, 0), bias_quantizer=quantized_bits(6, 0), name="fc")(h)
    out = tf.keras.layers.Activation("softmax", name="sm")(h)
    return tf.keras.Model(inp, out)


def float_mlp():
    import tensorflow as tf

    _seed(19)
    inp = tf.keras.Input((8,), name="x")
    h = tf.keras.layers.Dense(12, activation="relu", name="fc1")(inp)
    h = tf.keras.layers.Dense(4, name="fc2")(h)
    out = tf.keras.layers.Softmax(name="sm")(h)
    return tf.keras.Model(inp, out)


MODELS: tuple[LayerModel, ...] = (
    LayerModel("mlp", ("dense", "activation", "softmax"), mlp),
    LayerModel("dense_bn_qbits_out", ("dense", "batchnorm", "activation"), dense_bn_quantizer_output),
    LayerModel("conv1d_pools", ("conv1d", "activation", "pool1d", "reshape", "dense"), conv1d_avgpool),
    LayerModel("conv2d_strided", ("zeropad", "conv2d", "activation", "pool2d", "reshape", "dense"), conv2d_strided),
    LayerModel("activations", ("dense", "lookup", "activation"), activations),
    LayerModel("sigmoid_tanh", ("dense", "lookup"), sigmoid_tanh, note="lookup-table tanh and sigmoid: approximate"),
    LayerModel("merge_branches", ("dense", "activation", "merge", "concatenate"), merge_branches),
    LayerModel("merge_branches_stream", ("dense", "activation", "merge", "concatenate", "clone"), merge_branches,
               config={"io_type": "io_stream"}),
    LayerModel("spatial", ("crop", "depthwise2d", "activation", "upsample", "conv2d", "transpose", "global_pool",
                           "dense"), spatial),
    LayerModel("separable_1d", ("depthwise1d", "conv1d", "activation", "upsample", "crop", "global_pool", "dense"),
               separable_1d),
    LayerModel("default_alpha_gap", ("conv2d", "batchnorm", "activation", "global_pool", "dense", "softmax"),
               default_alpha_gap, note="average over 9 positions: argmax agreement"),
    LayerModel("float_mlp", ("dense", "activation", "softmax"), float_mlp, note="float model: profiled types"),
)


def get(name: str) -> LayerModel:
    for m in MODELS:
        if m.name == name:
            return m
    raise KeyError(f"no layer model {name!r}; have {', '.join(m.name for m in MODELS)}")
