"""The front door: `lepton-hls check` and the first step of `build` refuse, from the architecture alone and by the
user's own layer name, what cannot become a verified accelerator; they accept what the opset declares."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import run_cli
from lepton_hls.keras_io import ModelFiles, UnsupportedLayerError
from lepton_hls.model_check import check_model, refuse_unsupported

# The CLI's main in a process that then says which of the heavy libraries it had imported by the time it returned.
CLI_THEN_MODULES = """
import json, sys
from lepton_hls.cli import main
rc = main(sys.argv[1:])
print(json.dumps(sorted(m for m in ("tensorflow", "keras", "qkeras", "hls4ml", "da4ml") if m in sys.modules)))
sys.exit(rc)
"""


def _files(model, tmp_path: Path, name: str) -> Path:
    """Save as a newcomer does: architecture .json + weights .h5."""
    arch = tmp_path / f"{name}.json"
    arch.write_text(model.to_json())
    model.save_weights(str(tmp_path / f"{name}_weights.h5"))
    return arch


def _report(model):
    return check_model(ModelFiles(name="m", source="m.json", architecture_json=model.to_json(), weights_path=Path("-")))


def _refusal(model) -> str:
    with pytest.raises(UnsupportedLayerError) as err:
        refuse_unsupported(_report(model))
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_lstm_refused_by_name_before_anything_heavy_is_loaded_without_leaving_anything(tmp_path):
    import tensorflow as tf
    from tensorflow.keras import layers

    inp = layers.Input((8, 3))
    h = layers.LSTM(4, name="my_lstm")(inp)
    model = tf.keras.Model(inp, layers.Dense(2, name="head")(h))
    arch = _files(model, tmp_path, "lstm")
    out = tmp_path / "pkg"
    r = subprocess.run([sys.executable, "-c", CLI_THEN_MODULES, "build", str(arch), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "my_lstm" in lines[0] and "LSTM" in lines[0], r.stderr
    assert not out.exists() and not list(tmp_path.glob(".pkg*"))
    # Refused from the architecture alone: no TensorFlow load, no hls4ml conversion or compile before it.
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    "make,layer,words",
    [
        (lambda L, tf: L.Conv1D(2, 3, dilation_rate=2, name="dil"), "dil", "dilation_rate"),
        (lambda L, tf: L.Lambda(lambda x: x * 2, name="double"), "double", "Lambda"),
        (lambda L, tf: L.ReLU(max_value=6.0, name="relu6"), "relu6", "max_value"),
        (lambda L, tf: L.Activation("swish", name="sw"), "sw", "swish"),
        (lambda L, tf: L.GRU(3, name="gru"), "gru", "recurrent"),
        (lambda L, tf: L.LocallyConnected1D(2, 3, name="lc"), "lc", "LocallyConnected1D"),
    ],
    ids=["dilation", "lambda", "relu6", "swish", "gru", "locally_connected"],
)
def test_unsupported_layers_named(make, layer, words):
    import tensorflow as tf
    from tensorflow.keras import layers as L

    inp = L.Input((10, 3))
    out = make(L, tf)(inp)
    msg = _refusal(tf.keras.Model(inp, out))
    assert f"'{layer}'" in msg and words in msg and len(msg) < 600


def test_binary_weights_refused_with_reason():
    import tensorflow as tf
    from qkeras import QDense, binary

    inp = tf.keras.Input((4,))
    out = QDense(2, kernel_quantizer=binary(), name="bin_fc")(inp)
    msg = _refusal(tf.keras.Model(inp, out))
    assert "'bin_fc'" in msg and "binary" in msg


def test_two_inputs_refused():
    import tensorflow as tf
    from tensorflow.keras import layers as L

    a, b = L.Input((4,)), L.Input((4,))
    msg = _refusal(tf.keras.Model([a, b], L.Add()([a, b])))
    assert "2 inputs" in msg


def test_supported_model_listed_with_types(tmp_path):
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDense, quantized_bits, quantized_relu
    from tensorflow.keras import layers as L

    inp = L.Input((8, 8, 1))
    h = QConv2D(4, 3, strides=2, padding="same", kernel_quantizer=quantized_bits(6, 0, alpha=1),
                bias_quantizer=quantized_bits(6, 0, alpha=1), name="conv")(inp)
    h = QActivation(quantized_relu(8, 3), name="act")(h)  # given as an object, as newcomers do
    h = L.MaxPooling2D(name="pool")(h)
    h = L.Flatten(name="flat")(h)
    h = L.Dropout(0.2, name="drop")(h)
    h = QDense(3, kernel_quantizer="quantized_bits(6,0,alpha=1)", name="fc")(h)
    out = L.Activation("softmax", name="sm")(h)
    arch = _files(tf.keras.Model(inp, out), tmp_path, "cnn")
    r = run_cli("check", arch, "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    by_name = {l["name"]: l for l in rep["layers"]}
    assert rep["ok"] and by_name["act"]["result"] == "ufixed<8,3>"
    assert by_name["conv"]["quantizers"]["kernel"].startswith("quantized_bits(6,0")
    assert by_name["drop"]["result"].startswith("removed")
    assert rep["approximate"] == ["sm"]


def test_check_refuses_a_config_naming_a_missing_layer(tmp_path):
    import tensorflow as tf
    from tensorflow.keras import layers as L

    inp = L.Input((4,))
    arch = _files(tf.keras.Model(inp, L.Dense(2, name="fc")(inp)), tmp_path, "d")
    cfg = tmp_path / "cfg.yml"
    cfg.write_text("layer_precision:\n  fc2:\n    result: fixed<16,6>\n")
    r = run_cli("check", arch, "--config", cfg, timeout=120)
    assert r.returncode == 2 and "fc2" in r.stderr and "fc" in r.stderr


def test_layer_named_after_a_weight_variable_refused():
    import tensorflow as tf
    from qkeras import QDense

    inp = tf.keras.Input((6,))
    out = QDense(3, use_bias=False, kernel_quantizer="quantized_bits(6,0,alpha=1)", name="nobias")(inp)
    msg = _refusal(tf.keras.Model(inp, out))
    assert "'nobias'" in msg and "rename" in msg


def test_dense_on_a_sequence_refused_after_loading(tmp_path):
    import tensorflow as tf
    from qkeras import QDense

    inp = tf.keras.Input((8, 8))
    h = QDense(4, kernel_quantizer="quantized_bits(6,0,alpha=1)", name="seq_dense")(inp)
    out = tf.keras.layers.Flatten(name="flat")(h)
    arch = _files(tf.keras.Model(inp, out), tmp_path, "seq")
    r = run_cli("check", arch, timeout=120)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.startswith("lepton-hls")]
    assert len(lines) == 1 and "seq_dense" in lines[0] and "Flatten" in lines[0], r.stderr


@pytest.mark.parametrize(
    "make,layer,words",
    [
        (lambda L, q: q.QDense(3, kernel_quantizer="quantized_bits(6,0,keep_negative=False,alpha=1)", name="u"),
         "u", "keep_negative"),
        (lambda L, q: q.QActivation("quantized_bits(8,2,keep_negative=False)", name="pos"), "pos", "quantized_relu"),
        (lambda L, q: q.QDense(3, kernel_quantizer="quantized_po2(4)", bias_quantizer="quantized_po2(4)", name="p2"),
         "p2", "bias_quantizer"),
        (lambda L, q: q.QBatchNormalization(name="qbn"), "qbn", "quantizers to None"),
        (lambda L, q: L.Dense(3, name="fc-1.a"), "fc-1.a", "identifiers"),
        (lambda L, q: L.PReLU(shared_axes=[1], name="pr"), "pr", "shared_axes"),
    ],
    ids=["unsigned_kernel", "unsigned_activation", "po2_bias", "qbn_default_quantizers", "odd_name", "prelu_shared"],
)
def test_what_hls4ml_would_get_wrong_is_refused_up_front(make, layer, words):
    import qkeras
    import tensorflow as tf
    from tensorflow.keras import layers as L

    inp = L.Input((6, 4))
    out = make(L, qkeras)(inp)
    msg = _refusal(tf.keras.Model(inp, out))
    assert f"'{layer}'" in msg and words in msg
