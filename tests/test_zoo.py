"""The model zoo: shipped files load, the models still do their job on real (or generated) data, and the
float64 reference is what C simulation is compared against."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from lepton_host.errors import LeptonError
from lepton_hls import zoo
from paths import example_file

ACCURACY_MARGIN = 0.01
AUC_MARGIN = 0.01


@pytest.fixture(scope="session")
def digits():
    m = zoo.get("digits_cnn")
    return m, m.load_keras()


@pytest.fixture(scope="session")
def anomaly():
    m = zoo.get("anomaly_ae")
    return m, m.load_keras()


def _pre_softmax(model):
    import tensorflow as tf

    return tf.keras.Model(model.input, model.layers[-2].output)


def test_names_and_entries():
    assert zoo.names("edge") == ["anomaly_ae", "cancer_mlp", "digits_cnn", "jet_tagger"]
    assert set(zoo.names()) == set(zoo.names("edge")) | set(zoo.names("cloud"))
    for name in zoo.names():
        m = zoo.get(name)
        assert m.name == name and m.task in ("classifier", "autoencoder")
        assert m.json_path.is_file() and m.weights_path.is_file()
        assert m.description
    assert zoo.get("anomaly_ae").threshold is not None and zoo.get("digits_cnn").threshold is None


def test_unknown_name_lists_the_zoo():
    with pytest.raises(LeptonError) as e:
        zoo.get("resnet50")
    assert isinstance(e.value, zoo.ZooError)
    for name in zoo.names():
        assert name in str(e.value)


def test_import_does_not_load_tensorflow():
    code = "import sys, lepton_hls.zoo as z; z.get('digits_cnn'); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_digits_accuracy_on_real_test_split(digits):
    m, model = digits
    x, y = m.eval_data()
    assert x.shape == (360, 8, 8, 1) and x.min() >= 0 and x.max() <= 16
    acc = float((model.predict(m.preprocessing.apply(x), verbose=0).argmax(1) == y).mean())
    assert acc >= m.metrics["test_accuracy"] - ACCURACY_MARGIN
    assert acc > 0.9
    assert m.classes == tuple("0123456789")


def test_digits_preprocessing_is_pixel_over_16(digits):
    m, _ = digits
    assert m.preprocessing.kind == "standard"
    np.testing.assert_array_equal(m.preprocessing.apply(np.array([0.0, 8.0, 16.0])), [0.0, 0.5, 1.0])


def test_anomaly_threshold_separates_generated_anomalies(anomaly):
    from sklearn.metrics import roc_auc_score

    m, model = anomaly
    x, y = m.eval_data(2000, seed=0)
    assert x.shape == (2000, 32) and y.sum() == 1000
    xs = m.preprocessing.apply(x)
    err = np.mean((xs - model.predict(xs, verbose=0)) ** 2, axis=1)
    assert roc_auc_score(y, err) >= m.metrics["roc_auc"] - AUC_MARGIN
    flagged = err > m.threshold
    assert flagged[y == 1].mean() >= m.metrics["detection_rate"] - 0.03
    assert flagged[y == 0].mean() <= 0.05
    # a fresh draw of the data (another seed) is separated as well: the threshold is not fitted to one sample
    x2, y2 = m.eval_data(1000, seed=7)
    xs2 = m.preprocessing.apply(x2)
    err2 = np.mean((xs2 - model.predict(xs2, verbose=0)) ** 2, axis=1)
    assert roc_auc_score(y2, err2) > 0.9


def test_sensor_data_is_deterministic():
    m = zoo.get("anomaly_ae")
    a, la = m.eval_data(64, seed=3)
    b, lb = m.eval_data(64, seed=3)
    c, _ = m.eval_data(64, seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_jet_tagger_is_the_published_model():
    m = zoo.get("jet_tagger")
    assert m.classes == ("g", "q", "w", "z", "t") and m.preprocessing.kind == "identity"
    assert m.eval_data() is None and m.input_shape == (16,)
    for ours, theirs in ((m.json_path, "qkeras_3layer.json"), (m.weights_path, "qkeras_3layer_weights.h5")):
        assert hashlib.sha256(ours.read_bytes()).digest() == hashlib.sha256(example_file(theirs).read_bytes()).digest()
    model = m.load_keras()
    y = model.predict(np.random.default_rng(0).standard_normal((64, 16)), verbose=0)
    assert y.shape == (64, 5)
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-5)
    assert len(np.unique(y.argmax(1))) > 1  # real weights, not a constant classifier


def test_float64_reference_builds_every_layer_in_float64(digits):
    m, model32 = digits
    model64 = m.load_keras("float64")
    assert {layer.dtype for layer in model64.layers} == {"float64"}
    assert {w.dtype.name for w in model64.weights} == {"float64"}
    x = m.preprocessing.apply(m.eval_data(100)[0])
    y64 = _pre_softmax(model64).predict(x, verbose=0)
    assert y64.dtype == np.float64
    # the pre-softmax sums are short (72 products of 6-bit numbers): float32 holds them exactly too
    np.testing.assert_array_equal(y64, _pre_softmax(model32).predict(x, verbose=0))


def test_float64_holds_what_float32_cannot():
    """A QDense sum of 1023.5 + 2^-6 + 2^-21 feeding quantized_relu(16,11) (step 2^-5): float32 loses the 2^-21,
    sees an exact tie and rounds to even (down); the float64 reference keeps it and rounds up, as csim does."""
    import tensorflow as tf
    from qkeras import QActivation, QDense

    from lepton_hls import float64

    float64.install()

    def tiny(dtype):
        inp = tf.keras.Input((2,), dtype=dtype)
        dense = QDense(1, kernel_quantizer="quantized_bits(8,0,alpha=1)", use_bias=False, dtype=dtype)
        out = QActivation("quantized_relu(16,11)", dtype=dtype)(dense(inp))
        model = tf.keras.Model(inp, out)
        dense.set_weights([np.array([[0.5], [2.0**-7]])])
        return model

    x = np.array([[2047.0 + 2.0**-5, 2.0**-14]])
    y64 = tiny("float64").predict(x, verbose=0)
    y32 = tiny("float32").predict(x, verbose=0)
    assert y64.dtype == np.float64
    assert y64[0, 0] == 1023.5 + 2.0**-5
    assert y32[0, 0] == 1023.5


def test_float64_handles_power_of_two_quantizers():
    import tensorflow as tf
    from qkeras import QActivation, QDense

    from lepton_hls import float64

    float64.install()
    inp = tf.keras.Input((3,), dtype="float64")
    d = QDense(2, kernel_quantizer="quantized_po2(4)", bias_quantizer="quantized_po2(4)", dtype="float64")
    out = QActivation("quantized_relu_po2(4)", dtype="float64")(d(inp))
    model = tf.keras.Model(inp, out)
    y = model.predict(np.array([[0.3, -0.7, 1.1], [0.0, 0.5, 0.25]]), verbose=0)
    assert y.dtype == np.float64
    nonzero = y[np.abs(y) > 1e-12]
    np.testing.assert_array_equal(np.log2(nonzero), np.round(np.log2(nonzero)))


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.names("edge"))
def test_csim_matches_float64_model_bit_for_bit(name, tmp_path_factory):
    from lepton_hls.zoo.check_hls import check

    result = check(name, n=500, work=tmp_path_factory.mktemp(f"hls-{name}"))
    assert result.identical_rows == 1.0, result
    assert result.max_abs_diff == 0.0
