"""The fast engine against hls4ml's C simulation: outputs and every layer's output, bit for bit.

Each model is converted and compiled by the real hls4ml (with tracing on, so the C simulation reports every
layer's output), exported to the engine IR, and fed inputs on the input grid, off it, and far outside the
input format's range.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lepton_host.engine import Engine
from lepton_host.errors import EmulationError
from lepton_host.fixedpoint import FixedFormat
from paths import example_file


def convert(keras_model, out_dir: Path, io_type: str = "io_parallel"):
    """Convert with hls4ml (Vitis backend); the optimizers run, nothing is compiled."""
    import hls4ml

    cfg = hls4ml.utils.config_from_keras_model(keras_model, granularity="name", backend="Vitis")
    return hls4ml.converters.convert_from_keras_model(
        keras_model, hls_config=cfg, output_dir=str(out_dir), backend="Vitis", io_type=io_type
    )


def load_example(name: str):
    import tensorflow as tf
    from qkeras.utils import _add_supported_quantized_objects

    arch, weights = example_file(f"{name}.json"), example_file(f"{name}_weights.h5")
    co: dict = {}
    _add_supported_quantized_objects(co)
    model = tf.keras.models.model_from_json(arch.read_text(), custom_objects=co)
    model.load_weights(str(weights))
    return model


def tiny_conv1d_model():
    """QConv1D ('same' padding) -> BatchNorm -> AveragePooling1D -> quantized_bits -> strided QConv1D ->
    quantized_relu -> padded MaxPooling1D -> Flatten -> QDense -> softmax; converted with the Resource strategy."""
    import tensorflow as tf
    from qkeras import QActivation, QConv1D, QDense, quantized_bits, quantized_relu
    from tensorflow.keras import layers

    tf.keras.utils.set_random_seed(1)
    inp = layers.Input((12, 3), name="x")
    h = QConv1D(4, 3, padding="same", kernel_quantizer=quantized_bits(6, 0, alpha=1),
                bias_quantizer=quantized_bits(6, 0, alpha=1), name="conv")(inp)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.AveragePooling1D(2, name="avg")(h)
    h = QActivation(quantized_bits(8, 2, alpha=1), name="qb")(h)
    h = QConv1D(3, 2, strides=2, kernel_quantizer=quantized_bits(5, 0, alpha=1),
                bias_quantizer=quantized_bits(5, 0, alpha=1), name="conv2")(h)
    h = QActivation(quantized_relu(4, 1), name="qr")(h)
    h = layers.MaxPooling1D(2, padding="same", name="maxp")(h)
    h = layers.Flatten(name="flat")(h)
    h = QDense(3, kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(6, 0, alpha=1),
               name="fc")(h)
    out = layers.Activation("softmax", name="sm")(h)
    model = tf.keras.Model(inp, out)
    rng = np.random.default_rng(3)
    model.get_layer("bn").set_weights(
        [rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.3, 4), rng.normal(0, 0.3, 4), rng.uniform(0.3, 2, 4)]
    )
    return model


def tiny_conv2d_model():
    """QConv2D ('same' padding, stride 2, 2 channels in) -> relu -> QConv2D (8 channels in) ->
    AveragePooling2D ('same') -> Flatten -> Dense at hls4ml's default precision (fixed<16,6> weights and
    accumulator) -> softmax (converted with the 'latency' implementation)."""
    import tensorflow as tf
    from qkeras import QConv2D, quantized_bits
    from tensorflow.keras import layers

    tf.keras.utils.set_random_seed(2)
    inp = layers.Input((7, 6, 2), name="img")
    h = QConv2D(8, (3, 3), strides=(2, 2), padding="same", activation="relu",
                kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(6, 0, alpha=1),
                name="c2")(inp)
    h = QConv2D(4, (2, 2), kernel_quantizer=quantized_bits(5, 0, alpha=1), bias_quantizer=quantized_bits(5, 0, alpha=1),
                name="c3")(h)
    h = layers.AveragePooling2D((2, 2), padding="same", name="ap")(h)
    h = layers.Flatten(name="fl")(h)
    h = layers.Dense(4, name="d")(h)
    out = layers.Activation("softmax", name="sm")(h)
    return tf.keras.Model(inp, out)


def tiny_activations_model():
    """One element-wise layer of each way hls4ml computes them, each becoming a lookup op: a table (sigmoid), a
    per-channel comparison (PReLU), a QKeras hard function (quantized_tanh) and a quantizer (ternary)."""
    import tensorflow as tf
    from qkeras import QActivation, QDense, quantized_bits
    from tensorflow.keras import layers

    tf.keras.utils.set_random_seed(4)
    q = dict(kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(6, 0, alpha=1))
    inp = layers.Input((6,), name="x")
    h = QDense(8, name="d1", **q)(inp)
    h = QActivation("quantized_tanh(6,0)", name="qt")(h)
    h = QDense(8, name="d2", **q)(h)
    h = layers.Activation("sigmoid", name="sig")(h)
    h = layers.Dense(4, name="d5")(h)
    h = layers.PReLU(alpha_initializer=tf.keras.initializers.RandomUniform(0.05, 0.5), name="prelu")(h)
    out = QActivation("ternary", name="tern")(h)
    return tf.keras.Model(inp, out)


def tiny_activations_more_model():
    """The other element-wise layers, each one more lookup op (a probe compile apiece, hence the slow suite):
    LeakyReLU, ELU, tanh, softsign, hard_sigmoid."""
    import tensorflow as tf
    from qkeras import QDense, quantized_bits
    from tensorflow.keras import layers

    tf.keras.utils.set_random_seed(4)
    q = dict(kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(6, 0, alpha=1))
    inp = layers.Input((6,), name="x")
    h = QDense(8, name="d1", **q)(inp)
    h = layers.LeakyReLU(0.125, name="leaky")(h)
    h = layers.Dense(6, name="d4")(h)
    h = layers.ELU(name="elu")(h)
    h = layers.Dense(4, name="d5")(h)
    h = layers.Activation("tanh", name="th")(h)
    h = layers.Activation("softsign", name="ss")(h)
    out = layers.Activation("hard_sigmoid", name="hs")(h)
    return tf.keras.Model(inp, out)


def tiny_merge_model():
    """Two QDense branches from one input (one signed, one unsigned after quantized_relu) joined by every
    element-wise merge (Add, Subtract, Multiply, Average, Maximum, Minimum) and Dot, the results joined by 1D
    Concatenates, a QActivation(quantized_bits) straight after a merge, and a QDense on top."""
    import tensorflow as tf
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu
    from tensorflow.keras import layers

    tf.keras.utils.set_random_seed(5)
    q = dict(kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(6, 0, alpha=1))
    inp = layers.Input((6,), name="x")
    a = QDense(4, name="a", **q)(inp)
    b = QDense(4, name="b", **q)(inp)
    b = QActivation(quantized_relu(5, 2), name="b_relu")(b)
    add = layers.Add(name="add")([a, b])
    add = QActivation(quantized_bits(6, 2, alpha=1), name="add_q")(add)
    sub = layers.Subtract(name="sub")([a, b])
    mul = layers.Multiply(name="mul")([a, b])
    avg = layers.Average(name="avg")([a, b])
    mx = layers.Maximum(name="max")([a, b])
    mn = layers.Minimum(name="min")([b, a])
    dot = layers.Dot(axes=1, name="dot")([a, b])
    h = layers.Concatenate(name="cat1")([add, sub])
    h = layers.Concatenate(name="cat2")([h, mul])
    h = layers.Concatenate(name="cat3")([h, avg])
    h = layers.Concatenate(name="cat4")([mx, h])
    h = layers.Concatenate(name="cat5")([h, mn])
    h = layers.Concatenate(name="cat6")([h, dot])
    out = QDense(3, name="fc", **q)(h)
    return tf.keras.Model(inp, out)


def tiny_concat_model():
    """Two QConv2D branches joined along each of the three axes, the same branches reshaped to 2D and joined
    along both, everything flattened and joined in 1D."""
    import tensorflow as tf
    from qkeras import QConv2D, quantized_bits
    from tensorflow.keras import layers

    tf.keras.utils.set_random_seed(6)
    q = dict(kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(6, 0, alpha=1))
    inp = layers.Input((4, 3, 2), name="img")
    a = QConv2D(3, (1, 1), name="ca", **q)(inp)
    b = QConv2D(3, (2, 2), padding="same", activation="relu", name="cb", **q)(inp)
    parts = [layers.Concatenate(axis=ax, name=f"c3_{i}")([a, b]) for i, ax in enumerate((-1, 2, 1))]
    a2, b2 = layers.Reshape((12, 3), name="ra")(a), layers.Reshape((12, 3), name="rb")(b)
    parts += [layers.Concatenate(axis=ax, name=f"c2_{i}")([b2, a2]) for i, ax in enumerate((-1, 1))]
    flat = [layers.Flatten(name=f"f{i}")(p) for i, p in enumerate(parts)]
    h = flat[0]
    for i, f in enumerate(flat[1:]):
        h = layers.Concatenate(name=f"c1_{i}")([h, f])
    return tf.keras.Model(inp, h)


def tiny_spatial2d_model():
    """ZeroPadding2D -> Cropping2D -> QDepthwiseConv2D ('same') -> quantized_relu -> UpSampling2D (2, 1) ->
    QSeparableConv2D (stride (2, 1); hls4ml splits it into depthwise + pointwise) -> Permute ->
    GlobalAveragePooling2D over 42 positions (a division that leaves remainders)."""
    import tensorflow as tf
    from qkeras import QActivation, QDepthwiseConv2D, QSeparableConv2D, quantized_bits, quantized_relu
    from tensorflow.keras import layers

    tf.keras.utils.set_random_seed(5)
    q = lambda bits: quantized_bits(bits, 0, alpha=1)  # noqa: E731
    inp = layers.Input((8, 8, 2), name="img")
    h = layers.ZeroPadding2D(((1, 0), (0, 1)), name="zp")(inp)
    h = layers.Cropping2D(((0, 1), (1, 0)), name="crop")(h)
    h = QDepthwiseConv2D((3, 3), padding="same", depthwise_quantizer=q(6), bias_quantizer=q(6), name="dw")(h)
    h = QActivation(quantized_relu(4, 1), name="qr")(h)
    h = layers.UpSampling2D((2, 1), name="upsample")(h)
    h = QSeparableConv2D(3, (3, 3), strides=(2, 1), depthwise_quantizer=q(5), pointwise_quantizer=q(5),
                         bias_quantizer=q(5), name="sep")(h)
    h = layers.Permute((2, 1, 3), name="permute")(h)
    out = layers.GlobalAveragePooling2D(name="gap")(h)
    return tf.keras.Model(inp, out)


def tiny_spatial1d_model():
    """Cropping1D -> float DepthwiseConv1D ('same'; converted with a rounding, saturating accumulator) ->
    UpSampling1D -> QSeparableConv1D -> quantized_bits -> Permute (2, 1) -> GlobalMaxPooling1D, and a
    GlobalAveragePooling1D branch-free tail through Reshape."""
    import tensorflow as tf
    from qkeras import QActivation, QSeparableConv1D, quantized_bits
    from tensorflow.keras import layers

    tf.keras.utils.set_random_seed(6)
    q = lambda bits: quantized_bits(bits, 0, alpha=1)  # noqa: E731
    inp = layers.Input((12, 3), name="seq")
    h = layers.Cropping1D((1, 2), name="crop")(inp)
    h = layers.DepthwiseConv1D(3, padding="same", name="dw")(h)
    h = layers.UpSampling1D(2, name="upsample")(h)
    h = QSeparableConv1D(4, 3, depthwise_quantizer=q(5), pointwise_quantizer=q(5), bias_quantizer=q(5),
                         name="sep")(h)
    h = QActivation(quantized_bits(8, 2, alpha=1), name="qb")(h)
    h = layers.Permute((2, 1), name="permute")(h)
    h = layers.GlobalMaxPooling1D(name="gmp")(h)
    h = layers.Reshape((4, 4), name="rs")(h)
    out = layers.GlobalAveragePooling1D(name="gap")(h)
    return tf.keras.Model(inp, out, name="tiny_spatial1d")


def jet_tagger():
    """hls4ml's qkeras_3layer example (16-64-32-32-5), as the zoo ships it."""
    from lepton_hls import zoo

    return zoo.get("jet_tagger").load_keras()


MODELS = {
    "jet_tagger": jet_tagger,
    "qkeras_mnist_dense": lambda: load_example("qkeras_mnist_dense"),
    "tiny_conv1d": tiny_conv1d_model,
    "tiny_conv2d": tiny_conv2d_model,
    "tiny_activations": tiny_activations_model,
    "tiny_activations_more": tiny_activations_more_model,
    "tiny_merge": tiny_merge_model,
    "tiny_concat": tiny_concat_model,
    "qkeras_mnist_cnn": lambda: load_example("qkeras_mnist_cnn"),
    "tiny_spatial2d": tiny_spatial2d_model,
    "tiny_spatial1d": tiny_spatial1d_model,
}
# Accumulator types by Keras model name -> layer: a rounding, saturating depthwise accumulator takes the
# engine's step-by-step path.
ACCUM_PRECISIONS = {"tiny_spatial1d": {"dw": "fixed<14,5,RND,SAT>"}}
# In the slow suite: the example models (hls4ml's MNIST networks, the largest conversions here). Their layer
# kinds are compared here on tiny models, and their power-of-two weights end to end by test_build_verify's po2 package.
# Also there: the jet tagger (its package is compared with the C simulation end to end by test_build_verify and
# test_emulator), the 1-D convolution (the 2-D one keeps the convolution kinds in the default suite) and the
# element-wise layers beyond one of each kind (every lookup op costs a probe compile; tiny_activations keeps a
# table, a comparison, a hard function and a quantizer in the default suite).
SLOW = {"qkeras_mnist_dense", "qkeras_mnist_cnn", "jet_tagger", "tiny_conv1d", "tiny_activations_more"}
LARGE = {"qkeras_mnist_cnn"}  # compared on 24 inputs of each kind instead of 150
# Result types narrower than hls4ml's inferred ones, so merges round, wrap and saturate (layer -> precision).
PRECISIONS = {
    "tiny_merge": {
        "sub": "fixed<7,3,RND,SAT>",
        "mul": "fixed<8,2,TRN,WRAP>",
        "avg": "fixed<6,2,RND_CONV,SAT>",
        "max": "ufixed<5,2,RND,SAT>",
        "min": "fixed<6,1,TRN,WRAP>",
        "dot": "fixed<8,3,RND,SAT>",
        "cat3": "fixed<10,4,RND,SAT>",
    },
    "tiny_concat": {"c3_1": "fixed<8,2,RND,SAT>", "c2_0": "fixed<6,1,TRN,WRAP>"},
}


KINDS = ("grid", "off", "saturating")


def _inputs(shape, in_fmt: FixedFormat, kind: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(KINDS.index(kind))
    shape = (n, *shape)
    if kind == "grid":
        return in_fmt.cast(rng.normal(0, 1.5, shape))
    if kind == "off":
        return rng.normal(0, 2, shape)
    # Far outside ap_fixed<16,6>'s range: the input conversion wraps, later layers saturate.
    return rng.normal(0, 1, shape) * rng.choice([1.0, 40.0, 3000.0], size=shape)


class Built:
    """A model converted with tracing on, its C simulation run once on every kind of input (hls4ml's `trace`
    recompiles, so it runs once per model), and its exported engine."""

    def __init__(self, name: str, root: Path, n: int):
        from lepton_hls.engine_export import export_engine

        keras_model = MODELS[name]()
        softmax = "latency" if name == "tiny_conv2d" else None  # exercise hls4ml's other softmax too
        strategy = "Resource" if name == "tiny_conv1d" else "Latency"  # and its other kernel layout
        hls_model = _convert_for_trace(keras_model, root / "hls", softmax, strategy, PRECISIONS.get(name, {}))
        shape = tuple(int(s) for s in keras_model.input_shape[1:])
        in_fmt = FixedFormat.parse(str(hls_model.get_input_variables()[0].type.precision))
        self.n = n
        self.x = {k: np.ascontiguousarray(_inputs(shape, in_fmt, k, n), dtype=np.float64) for k in KINDS}
        out, trace = hls_model.trace(np.concatenate([self.x[k] for k in KINDS]))
        self.csim_out = np.asarray(out, dtype=np.float64).reshape(len(KINDS) * n, -1)
        self.csim_trace = {k: np.asarray(v, dtype=np.float64).reshape(len(KINDS) * n, -1) for k, v in trace.items()}
        export_engine(hls_model, root / "engine")
        self.engine = Engine.load(root / "engine")
        self.graph = json.loads((root / "engine" / "graph.json").read_text())
        self.in_fmt = self.engine.input_node.format
        self.out_fmt = self.engine.output_node.format

    def csim(self, kind: str):
        sl = slice(KINDS.index(kind) * self.n, (KINDS.index(kind) + 1) * self.n)
        return self.csim_out[sl], {k: v[sl] for k, v in self.csim_trace.items()}


def _convert_for_trace(keras_model, out_dir: Path, softmax_implementation: str | None, strategy: str,
                       precisions: dict[str, str]):
    import hls4ml

    cfg = hls4ml.utils.config_from_keras_model(keras_model, granularity="name", backend="Vitis")
    cfg["Model"]["Strategy"] = strategy
    for layer_cfg in cfg["LayerName"].values():
        layer_cfg["Trace"] = True
        layer_cfg["Strategy"] = strategy
    for layer in keras_model.layers:
        if type(layer).__name__ == "Dot":
            # hls4ml 1.3.0 cannot infer a Dot's accumulator ('auto' accum fails its precision inference).
            cfg["LayerName"][layer.name]["Precision"] = {"result": "auto", "accum": "fixed<24,12>"}
    for layer_name, precision in precisions.items():
        if isinstance(cfg["LayerName"][layer_name].get("Precision"), dict):
            cfg["LayerName"][layer_name]["Precision"]["result"] = precision
        else:
            cfg["LayerName"][layer_name]["Precision"] = {"result": precision}
    for layer_name, accum in ACCUM_PRECISIONS.get(keras_model.name, {}).items():
        cfg["LayerName"][layer_name]["Precision"]["accum"] = accum
    if softmax_implementation:
        for layer in keras_model.layers:
            if "softmax" in layer.name or "sm" == layer.name:
                cfg["LayerName"][layer.name]["Implementation"] = softmax_implementation
    # trace() writes and compiles the project (with tracing) itself; weights stay in text files (compiling
    # them into headers takes minutes for the MNIST models).
    return hls4ml.converters.convert_from_keras_model(
        keras_model, hls_config=cfg, output_dir=str(out_dir), backend="Vitis", io_type="io_parallel"
    )


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    cache: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in cache:
            cache[name] = Built(name, tmp_path_factory.mktemp(name), 24 if name in LARGE else 150)
        return cache[name]

    return get


def _params():
    out = []
    for name in MODELS:
        marks = [pytest.mark.slow] if name in SLOW else []
        for kind in KINDS:
            out.append(pytest.param(name, kind, marks=marks, id=f"{name}-{kind}"))
    return out


@pytest.mark.parametrize("name,kind", _params())
def test_engine_matches_csim_layer_by_layer(built, name, kind):
    b = built(name)
    x, n = b.x[kind], b.n
    csim_out, csim_trace = b.csim(kind)
    trace = b.engine.run_raw(b.in_fmt.quantize(x), trace=True)

    compared = 0
    for node in b.engine.nodes:
        if node.name not in csim_trace:
            continue
        ours = node.format.to_float(trace[node.name]).reshape(n, -1)
        theirs = csim_trace[node.name]
        bad = np.flatnonzero(np.any(ours != theirs, axis=1))
        assert bad.size == 0, (
            f"{name}/{kind}: layer {node.name} ({node.op}) differs from csim in {bad.size}/{n} samples; "
            f"first: engine {ours[bad[0]][:8]} csim {theirs[bad[0]][:8]}"
        )
        compared += 1
    assert compared >= 3, f"only {compared} traced layers could be compared"

    out = b.out_fmt.to_float(trace[b.engine.output_node.name]).reshape(n, -1)
    np.testing.assert_array_equal(out, csim_out)


def test_ir_names_every_op_and_format(jet_package):
    """The engine graph a build writes (the session's jet tagger package; no conversion of its own)."""
    from lepton_hls.build_config import BuildConfig

    graph = json.loads((jet_package / "engine" / "graph.json").read_text())
    ops = [layer["op"] for layer in graph["layers"]]
    assert ops[0] == "input" and ops[-1] == "softmax" and ops.count("dense") == 4
    for layer in graph["layers"]:
        FixedFormat.from_dict(layer["format"])
    sm = graph["layers"][-1]["params"]
    assert sm["implementation"] == "stable" and sm["exp_table_size"] == 2 ** BuildConfig().softmax_table_bits


def test_unsupported_layer_is_named(tmp_path):
    import tensorflow as tf
    from tensorflow.keras import layers

    from lepton_hls.engine_export import export_engine

    inp = layers.Input((5,), name="tokens")
    h = layers.Embedding(10, 3, name="embed")(inp)
    out = layers.Flatten(name="flat")(h)
    hls_model = convert(tf.keras.Model(inp, out), tmp_path / "hls")
    with pytest.raises(EmulationError) as err:
        export_engine(hls_model, tmp_path / "engine")
    msg = str(err.value)
    assert "embed" in msg and "Embedding" in msg and "Dense" in msg  # layer, what is wrong, what is supported


# ---- engine arithmetic without hls4ml: wide accumulators and saturating ones ---------------------------------
def _dense_graph(w_fmt: FixedFormat, accum: FixedFormat, x_fmt: FixedFormat, w: np.ndarray, b: np.ndarray):
    graph = {
        "schema": "lepton-hls/engine",
        "version": 1,
        "inputs": ["x"],
        "outputs": ["d"],
        "layers": [
            {"name": "x", "op": "input", "inputs": [], "shape": [w.shape[0]], "format": x_fmt.to_dict(), "params": {}},
            {
                "name": "d", "op": "dense", "inputs": ["x"], "shape": [w.shape[1]], "format": accum.to_dict(),
                "params": {"n_in": w.shape[0], "n_out": w.shape[1], "product": "mult", "weight": w_fmt.to_dict(),
                           "bias": w_fmt.to_dict(), "accum": accum.to_dict()},
            },
        ],
    }
    return Engine(graph, {"d/kernel": w, "d/bias": b})


def _py_convert(v: int, from_frac: int, f: FixedFormat) -> int:
    """An ap_fixed assignment on unbounded Python integers (TRN/RND rounding, WRAP/SAT overflow)."""
    shift = from_frac - f.frac
    if shift <= 0:
        v <<= -shift
    else:
        floor, rem = v >> shift, v & ((1 << shift) - 1)
        v = floor + (1 if f.rounding == "RND" and rem >= 1 << (shift - 1) else 0)
    if f.saturation == "SAT":
        return min(max(v, f.raw_min), f.raw_max)
    return ((v - f.raw_min) % (1 << f.width)) + f.raw_min


def _reference_dense(x, w, b, x_fmt, w_fmt, accum):
    """One product and one accumulation step at a time, as hls4ml's dense_latency does."""
    fp = x_fmt.frac + w_fmt.frac
    out = np.zeros((len(x), w.shape[1]), dtype=np.int64)
    for n in range(len(x)):
        for j in range(w.shape[1]):
            acc = _py_convert(int(b[j]), w_fmt.frac, accum)
            for i in range(w.shape[0]):
                acc = _py_convert(acc + _py_convert(int(x[n, i]) * int(w[i, j]), fp, accum), accum.frac, accum)
            out[n, j] = acc
    return out


@pytest.mark.parametrize(
    "x_fmt,w_fmt,accum",
    [
        # products and sums far beyond 2**53: the int64 path (modular) must take over from float64
        (FixedFormat(30, 10), FixedFormat(28, 4), FixedFormat(60, 14)),
        # accumulator with fewer fraction bits than the product: per-product rounding
        (FixedFormat(16, 6), FixedFormat(8, 1), FixedFormat(12, 6, rounding="RND")),
        # saturating accumulator: order-dependent, evaluated step by step
        (FixedFormat(16, 6), FixedFormat(8, 1), FixedFormat(14, 4, saturation="SAT")),
    ],
    ids=["wide-int64", "per-product-rounding", "saturating-accumulator"],
)
def test_dense_arithmetic_against_python_integers(x_fmt, w_fmt, accum):
    rng = np.random.default_rng(7)
    n_in, n_out = 9, 4
    w = rng.integers(w_fmt.raw_min, w_fmt.raw_max + 1, size=(n_in, n_out), dtype=np.int64)
    b = rng.integers(w_fmt.raw_min, w_fmt.raw_max + 1, size=n_out, dtype=np.int64)
    x = rng.integers(x_fmt.raw_min, x_fmt.raw_max + 1, size=(50, n_in), dtype=np.int64)
    engine = _dense_graph(w_fmt, accum, x_fmt, w, b)
    np.testing.assert_array_equal(engine.run_raw(x), _reference_dense(x, w, b, x_fmt, w_fmt, accum))


# ---- merges without hls4ml: products wider than int64 ----------------------------------------------------
@pytest.mark.parametrize("function", ["multiply", "add", "maximum"])
@pytest.mark.parametrize("result", [FixedFormat(40, 12, rounding="RND", saturation="SAT"), FixedFormat(30, 4)],
                         ids=["rnd-sat", "trn-wrap"])
def test_merge_of_wide_values_against_python_integers(function, result):
    """A 40-bit value times a 34-bit one needs 74 bits: the engine must leave int64 and still round and
    overflow as an ap_fixed assignment."""
    x_fmt, d_fmt = FixedFormat(40, 20), FixedFormat(34, 14)
    rng = np.random.default_rng(11)
    # Moderate values, so most results neither saturate nor wrap; the first lands halfway between two RND
    # results for every odd x.
    w = rng.integers(-(1 << 25), 1 << 25, size=(1, 3), dtype=np.int64)
    w[0, 0] = (w[0, 0] >> 12 << 12) | 0x800
    graph = {
        "schema": "lepton-hls/engine", "version": 1, "inputs": ["x"], "outputs": ["m"],
        "layers": [
            {"name": "x", "op": "input", "inputs": [], "shape": [3], "format": x_fmt.to_dict(), "params": {}},
            {"name": "d", "op": "dense", "inputs": ["x"], "shape": [3], "format": d_fmt.to_dict(),
             "params": {"n_in": 3, "n_out": 3, "product": "mult", "weight": FixedFormat(2, 2).to_dict(),
                        "bias": d_fmt.to_dict(), "accum": FixedFormat(60, 30).to_dict()}},
            {"name": "m", "op": "merge", "inputs": ["x", "d"], "shape": [3], "format": result.to_dict(),
             "params": {"function": function, "n_elem1": 3, "n_elem2": 3}},
        ],
    }
    engine = Engine(graph, {"d/kernel": np.zeros((3, 3), dtype=np.int64), "d/bias": w[0]})
    x = rng.integers(-(1 << 22), 1 << 22, size=(40, 3), dtype=np.int64)
    x[0] = x_fmt.raw_min
    x[1] = x_fmt.raw_max
    got = engine.run_raw(x)
    for n in range(len(x)):
        for i in range(3):
            a, b = int(x[n, i]), int(w[0, i])  # the dense layer outputs its bias: exact in d_fmt
            if function == "multiply":
                v, frac = a * b, x_fmt.frac + d_fmt.frac
            else:
                frac = max(x_fmt.frac, d_fmt.frac)
                a, b = a << (frac - x_fmt.frac), b << (frac - d_fmt.frac)
                v = a + b if function == "add" else max(a, b)
            assert got[n, i] == _py_convert(v, frac, result), (n, i)
