"""The cloud model as ONNX (`lepton-hls export-onnx`) and as a Triton repository for the onnxruntime backend
(`lepton-hls export-triton --backend onnxruntime`): onnxruntime's answers on raw features against TensorFlow's
(the zoo's digits_cloud on its held-out digits; the package's own model against a numpy reference), the file's
self-description, and config.pbtxt read by Triton's own ModelConfig schema (tritonclient's model_config_pb2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from serving_support import IN_FORMAT, keras_reference, shared_package

from lepton_hls.cli import main

ort = pytest.importorskip("onnxruntime")


def digits_contract_package(root: Path) -> Path:
    """A package directory that states the digits contract (digits_cnn's names, shapes, classes and
    preprocessing) and nothing else: all `--model zoo:digits_cloud` needs from a package."""
    from lepton_host.fixedpoint import FixedFormat
    from lepton_host.manifest import Fidelity, HlsInfo, Manifest, ModelInfo, Preprocessing, TensorSpec

    root.mkdir(parents=True, exist_ok=True)
    Manifest(
        model=ModelInfo(name="digits_cnn", source="zoo:digits_cnn", sha256="0" * 64,
                        classes=tuple(str(d) for d in range(10))),
        inputs=[TensorSpec("pixels", (8, 8, 1), IN_FORMAT)],
        outputs=[TensorSpec("layer9_out", (10,), FixedFormat.parse("ap_ufixed<16,0>"))],
        hls=HlsInfo(backend="Vitis", board=None, part="xc7z020clg400-1", clock_ns=10.0, io_type="io_parallel",
                    strategy="Latency", reuse_factor=1),
        preprocessing=Preprocessing("standard", (0.0,), (16.0,)),
        fidelity=Fidelity(),
    ).save(root)
    return root


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits_onnx")
    package = digits_contract_package(root / "pkg")
    out = root / "digits_cloud.onnx"
    assert main(["export-onnx", str(package), "--model", "zoo:digits_cloud", "--out", str(out)]) == 0
    return package, out


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_digits_cloud_onnx_answers_like_tensorflow_on_the_held_out_digits(digits_onnx):
    from lepton_hls import zoo

    _, path = digits_onnx
    entry = zoo.get("digits_cloud")
    x, labels = entry.eval_data()  # raw pixels 0..16, as the gateway sends them
    s = session(path)
    y_onnx = s.run(None, {"pixels": x.astype(np.float32)})[0]
    y_tf = entry.load_keras().predict(entry.preprocessing.apply(x).astype(np.float32), verbose=0)
    assert y_onnx.shape == (len(x), 10)
    assert np.abs(y_onnx - y_tf).max() < 1e-5
    assert (y_onnx.argmax(1) == y_tf.argmax(1)).all()
    assert (y_onnx.argmax(1) == labels).mean() == (y_tf.argmax(1) == labels).mean() >= 0.99


def test_the_onnx_file_states_the_package_contract(digits_onnx, capsys):
    from lepton_cloud.onnx_contract import read_contract
    from lepton_host.manifest import load_manifest

    package, path = digits_onnx
    s = session(path)
    assert [(t.name, t.shape) for t in s.get_inputs()] == [("pixels", ["batch", 8, 8, 1])]
    assert [(t.name, t.shape) for t in s.get_outputs()] == [("layer9_out", ["batch", 10])]
    contract = read_contract(s, str(path))
    assert (contract.model_name, contract.source) == ("digits_cnn", "zoo:digits_cloud")
    assert contract.classes == tuple(str(d) for d in range(10))
    assert json.loads(contract.preprocessing)["scale"] == [16.0]
    assert contract.differences(load_manifest(package)) == []


def test_metadata_missing_is_named(digits_onnx, tmp_path):
    import onnx

    from lepton_cloud.onnx_contract import OnnxContractError, read_contract

    proto = onnx.load(str(digits_onnx[1]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(OnnxContractError, match="lepton.model_name.*lepton-hls export-onnx"):
        read_contract(session(bare), str(bare))


def test_the_package_own_model_takes_raw_features(tmp_path, capsys):
    package = shared_package()
    out = tmp_path / "own.onnx"
    assert main(["export-onnx", str(package), "--out", str(out)]) == 0
    assert "max |diff|" in capsys.readouterr().out
    x = np.random.default_rng(3).normal(0.5, 4.0, (33, 16)).astype(np.float32)
    y = session(out).run(None, {"features": x})[0]
    np.testing.assert_allclose(y, keras_reference(package, x), atol=1e-6)


def test_a_model_that_does_not_fit_the_package_is_refused_in_one_line(tmp_path, capsys):
    assert main(["export-onnx", str(shared_package()), "--model", "zoo:digits_cloud",
                 "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "does not fit the package" in err and "input shape" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


# ---- Triton repository for the onnxruntime backend ---------------------------------------------------------


def triton_model_config():
    """Triton's own ModelConfig message (tritonclient's generated module of Triton's model_config.proto)."""
    return pytest.importorskip("tritonclient.grpc.model_config_pb2",
                               reason="tritonclient[grpc] (requirements.lock) holds Triton's schema").ModelConfig()


@pytest.fixture(scope="module")
def onnx_repository(tmp_path_factory):
    out = tmp_path_factory.mktemp("triton_onnx")
    assert main(["export-triton", str(shared_package()), str(out), "--backend", "onnxruntime",
                 "--max-batch-size", "64", "--preferred-batch-size", "16", "--max-queue-delay-us", "500",
                 "--instance-kind", "KIND_GPU", "--instance-count", "2"]) == 0
    return out / "tiny_classifier"


def test_triton_config_parses_with_tritons_schema_and_matches_the_onnx_graph(onnx_repository):
    from google.protobuf import text_format

    config = text_format.Parse((onnx_repository / "config.pbtxt").read_text(), triton_model_config())
    assert (config.name, config.platform, config.max_batch_size) == ("tiny_classifier", "onnxruntime_onnx", 64)
    assert list(config.dynamic_batching.preferred_batch_size) == [16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    group, = config.instance_group
    kind = group.DESCRIPTOR.enum_types_by_name["Kind"].values_by_number[group.kind].name
    assert (group.count, kind) == (2, "KIND_GPU")
    s = session(onnx_repository / "1" / "model.onnx")
    graph = {t.name: t.shape for t in [*s.get_inputs(), *s.get_outputs()]}
    for tensor in (*config.input, *config.output):
        assert graph[tensor.name][0] == "batch"  # Triton's batch dimension is free in the graph
        assert list(tensor.dims) == graph[tensor.name][1:]
    assert config.output[0].label_filename == "labels.txt"
    assert (onnx_repository / "labels.txt").read_text().split() == [f"c{i}" for i in range(5)]


def test_triton_onnx_model_answers_raw_features_like_the_original(onnx_repository):
    x = np.random.default_rng(4).normal(0.5, 4.0, (17, 16)).astype(np.float32)
    y = session(onnx_repository / "1" / "model.onnx").run(["softmax"], {"features": x})[0]
    np.testing.assert_allclose(y, keras_reference(shared_package(), x), atol=1e-6)


def test_the_savedmodel_backend_takes_the_package_model_only(tmp_path, capsys):
    assert main(["export-triton", str(shared_package()), str(tmp_path), "--model", "zoo:digits_cloud"]) == 2
    assert "--backend onnxruntime" in capsys.readouterr().err
