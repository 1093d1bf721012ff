"""`lepton-hls export-triton`: the SavedModel Triton would load answers like the original model on raw features
(preprocessing inside the graph), under the package's tensor names, and config.pbtxt declares them with dynamic
batching. Also the serving commands' command lines."""

from __future__ import annotations

import re

import numpy as np
import pytest
from serving_support import keras_reference, shared_package

from lepton_hls.cli import build_parser, main


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("triton")
    assert main(["export-triton", str(shared_package()), str(out), "--max-batch-size", "128",
                 "--preferred-batch-size", "16", "--instance-kind", "KIND_GPU"]) == 0
    return out


def test_savedmodel_matches_the_original_model_on_raw_features(exported):
    import tensorflow as tf

    package = shared_package()
    saved = exported / "tiny_classifier" / "1" / "model.savedmodel"
    sig = tf.saved_model.load(str(saved)).signatures["serving_default"]
    _, inputs = sig.structured_input_signature
    assert list(inputs) == ["features"] and list(sig.structured_outputs) == ["softmax"]
    x = np.random.default_rng(3).normal(0.5, 4.0, (33, 16)).astype(np.float32)
    y = sig(features=tf.constant(x))["softmax"].numpy()
    np.testing.assert_allclose(y, keras_reference(package, x), atol=1e-6)


def test_config_pbtxt_declares_tensors_and_dynamic_batching(exported):
    text = (exported / "tiny_classifier" / "config.pbtxt").read_text()
    assert 'name: "tiny_classifier"' in text and 'platform: "tensorflow_savedmodel"' in text
    assert "max_batch_size: 128" in text
    assert re.search(r'name: "features" data_type: TYPE_FP32 dims: \[ 16 \]', text)
    assert re.search(r'name: "softmax" data_type: TYPE_FP32 dims: \[ 5 \]', text)
    assert re.search(r"dynamic_batching \{\s*preferred_batch_size: \[ 16 \]\s*max_queue_delay_microseconds: 2000", text)
    assert "kind: KIND_GPU" in text
    assert text.count("{") == text.count("}") and text.count("[") == text.count("]")


def test_export_refuses_to_overwrite_without_the_flag(exported, capsys):
    assert main(["export-triton", str(shared_package()), str(exported)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_serving_commands_parse_with_loopback_defaults():
    p = build_parser()
    a = p.parse_args(["serve", "pkg"])
    from lepton_hls.commands._target import resolve_target

    assert (a.host, a.port, a.cloud) == ("127.0.0.1", 8000, None)
    assert resolve_target(a, "serve") == ("auto", "fast")  # one default rule for every entry point
    a = p.parse_args(["serve", "pkg", "--cloud", "http://10.0.0.2:8001", "--mode", "cloud", "--max-batch-size", "8"])
    assert a.cloud == "http://10.0.0.2:8001" and a.mode == "cloud" and a.max_batch_size == 8
    a = p.parse_args(["cloud", "pkg"])
    assert (a.host, a.port) == ("127.0.0.1", 8001)


def test_serve_reports_a_missing_package_in_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "not a package directory" in err and "Traceback" not in err
