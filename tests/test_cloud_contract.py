"""The cloud model's contract: `lepton-hls cloud --model` serves another model than the package's own only when
its per-sample shapes are the package's, both servers state their class order in their model metadata, and the
gateway compares the cloud's metadata with its package (at the start of `lepton-hls serve`, and before its first
cloud call), refusing a cloud whose answers it would misread."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from cli_runner import run_cli
from serving_support import NumpyBoardBackend, free_port, running_gateway, shared_package

from lepton_host.manifest import Preprocessing, load_manifest
from lepton_host.serving.cloud_contract import (
    CloudContractError,
    ModelContract,
    UnreadableMetadata,
    check,
    compare,
)
from lepton_host.serving.routing import RoutingPolicy

CLASSES = tuple(f"c{i}" for i in range(5))  # the shared classifier package's


def save_dense(path: Path, n_in: int, n_out: int, seed: int, as_json: bool = False) -> Path:
    """A float MLP (n_in-12-12-n_out, softmax) unlike the package's: a whole-model .h5, or an architecture .json
    with its weights beside it as <stem>_weights.h5."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((n_in,), name="features")
    h = tf.keras.layers.Dense(12, activation="relu")(inp)
    h = tf.keras.layers.Dense(12, activation="relu")(h)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(n_out, activation="softmax")(h))
    path.parent.mkdir(parents=True, exist_ok=True)
    if as_json:
        path.write_text(model.to_json())
        model.save_weights(str(path.with_name(path.stem + "_weights.h5")))
    else:
        model.save(path)
    return path


def reference(model_path: Path, x_model: np.ndarray) -> np.ndarray:
    from lepton_hls import keras_io

    model = keras_io.load_keras(keras_io.resolve_files(model_path))
    return np.asarray(model(x_model.astype(np.float32), training=False), dtype=np.float64)


def package_with_output(root: Path, base: Path, model_h5: Path, n_out: int, classes) -> Path:
    """The shared package's contract with another output size: what a cloud serving another model states."""
    m = load_manifest(base, verify=False)
    (root / "model").mkdir(parents=True)
    shutil.copy(model_h5, root / "model" / "model.h5")
    other = dataclasses.replace(m, outputs=[dataclasses.replace(m.output, shape=(n_out,))],
                                model=dataclasses.replace(m.model, classes=tuple(classes)), artifacts={})
    other.add_artifacts(root, ["model/model.h5"])
    other.save(root)
    return root


@pytest.fixture(scope="module")
def package() -> Path:
    return shared_package("classifier")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cloud_models")
    return {"big": save_dense(d / "big.h5", 16, 5, seed=3),
            "big_json": save_dense(d / "big_json.json", 16, 5, seed=4, as_json=True),
            "three": save_dense(d / "three.h5", 16, 3, seed=5)}


def cloud(package: Path, **choice):
    """The cloud server in process (what `lepton-hls cloud DIR --model ...` runs) on a loopback port."""
    from lepton_cloud.server import CloudServerConfig, ModelChoice, create_cloud_server
    from lepton_host.serving.runner import ServerThread

    config = CloudServerConfig(device="/CPU:0", model=ModelChoice(**choice) if choice else None)
    app, service = create_cloud_server(package, config)
    return ServerThread(app).start(), service


def one_line_error(r, command: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stdout, r.stderr)
    assert lines[0].startswith(f"lepton-hls {command}: error: ")
    return lines[0]


def _x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, (n, 16)).astype(np.float32)


def _body(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "features", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


# ---- the cloud server serves another model that fits ---------------------------------------------------------


def test_cloud_serves_another_model_that_fits_and_the_gateway_accepts_it(package, models):
    m = load_manifest(package)
    server, service = cloud(package, source=str(models["big_json"]))  # .json, weights found beside it
    try:
        meta = httpx.get(f"{server.url}/v2/models/{m.model.name}").json()
        assert meta["outputs"][0]["shape"] == [-1, 5]
        assert json.loads(meta["outputs"][0]["parameters"]["classes"]) == list(CLASSES)
        x = _x(8)
        want = reference(models["big_json"], m.preprocessing.apply(x))  # the package's preprocessing by default
        r = httpx.post(f"{server.url}/v2/models/{m.model.name}/infer", json=_body(x))
        y = np.asarray(r.json()["outputs"][0]["data"]).reshape(8, 5)
        np.testing.assert_allclose(y, want, atol=1e-6)

        # the gateway checks the contract before its first cloud call, finds it kept, and the cloud answers
        contract = ModelContract.from_manifest(m)
        with running_gateway(package, NumpyBoardBackend(package), server.url, policy=RoutingPolicy(mode="cloud"),
                             cloud_kw={"contract": contract}) as (gw, gateway):
            r = httpx.post(f"{gw.url}/v2/models/{m.model.name}/infer", json=_body(x))
            assert r.status_code == 200 and r.json()["parameters"]["served_by"] == "cloud"
            np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"]).reshape(8, 5), want, atol=1e-6)
            assert gateway.cloud.contract_notes == []
            # the gateway states the package's class order too
            meta = httpx.get(f"{gw.url}/v2/models/{m.model.name}").json()
            assert json.loads(meta["outputs"][0]["parameters"]["classes"]) == list(CLASSES)
    finally:
        server.stop()


def test_cloud_takes_its_own_classes_and_preprocessing(package, models, tmp_path):
    from lepton_hls.commands.cloud import read_preprocessing

    pre = tmp_path / "pre.json"
    pre.write_text(json.dumps({"kind": "standard", "mean": [0.0], "scale": [4.0]}))
    order = tuple(reversed(CLASSES))
    server, service = cloud(package, source=str(models["big"]), classes=order, preprocessing=read_preprocessing(pre))
    try:
        meta = httpx.get(f"{server.url}/v2/models/{service.name}").json()
        assert json.loads(meta["outputs"][0]["parameters"]["classes"]) == list(order)
        x = _x(4, seed=1)
        r = httpx.post(f"{server.url}/v2/models/{service.name}/infer", json=_body(x))
        y = np.asarray(r.json()["outputs"][0]["data"]).reshape(4, 5)
        np.testing.assert_allclose(y, reference(models["big"], x / 4.0), atol=1e-6)
    finally:
        server.stop()


def test_cloud_serves_savedmodels_keras_and_plain(package, models, tmp_path):
    import tensorflow as tf

    from lepton_hls import keras_io

    keras_model = keras_io.load_keras(keras_io.resolve_files(models["big"]))
    keras_model.save(str(tmp_path / "keras"))

    class Plain(tf.Module):  # a SavedModel that only its serving signature describes
        def __init__(self, model):
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="features")])
        def serve(self, x):
            return {"probabilities": self.model(x)}

    plain = Plain(keras_model)
    tf.saved_model.save(plain, str(tmp_path / "plain"), signatures={"serving_default": plain.serve})
    m = load_manifest(package)
    x = _x(4, seed=2)
    want = reference(models["big"], m.preprocessing.apply(x))
    for folder, platform in (("keras", "tensorflow_keras"), ("plain", "tensorflow_savedmodel")):
        server, service = cloud(package, source=str(tmp_path / folder))
        try:
            assert service.platform == platform
            r = httpx.post(f"{server.url}/v2/models/{m.model.name}/infer", json=_body(x))
            np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"]).reshape(4, 5), want, atol=1e-6)
        finally:
            server.stop()


def test_cloud_serves_a_zoo_model_with_the_zoo_entrys_preprocessing_and_classes(package, tmp_path):
    from lepton_hls import zoo

    try:
        entry = zoo.get("digits_cloud")
    except zoo.ZooError:
        pytest.skip("this zoo has no digits_cloud")
    m = load_manifest(package, verify=False)  # a package of digits_cnn's contract, its preprocessing the identity
    digits = dataclasses.replace(
        m, inputs=[dataclasses.replace(m.input, name="pixels", shape=(8, 8, 1))],
        outputs=[dataclasses.replace(m.output, shape=(10,))], artifacts={}, preprocessing=Preprocessing(),
        model=dataclasses.replace(m.model, name="digits", classes=tuple("abcdefghij")))
    digits.save(tmp_path)
    server, service = cloud(tmp_path, source="zoo:digits_cloud")
    try:
        meta = httpx.get(f"{server.url}/v2/models/digits").json()
        assert json.loads(meta["outputs"][0]["parameters"]["classes"]) == list(entry.classes)  # not the package's
        x, _ = entry.eval_data(64)
        body = {"inputs": [{"name": "pixels", "shape": list(x.shape), "datatype": "FP32",
                            "data": x.astype(np.float32).ravel().tolist()}]}
        y = np.asarray(httpx.post(f"{server.url}/v2/models/digits/infer", json=body).json()["outputs"][0]["data"])
        want = entry.load_keras()(entry.preprocessing.apply(x).astype(np.float32), training=False)
        np.testing.assert_allclose(y.reshape(64, 10), np.asarray(want), atol=1e-6)
    finally:
        server.stop()


def test_cloud_refuses_a_model_of_another_output_shape_in_one_line(package, models):
    r = run_cli("cloud", package, "--model", models["three"], "--port", "0", "--device", "/CPU:0", timeout=120)
    line = one_line_error(r, "cloud")
    assert "output shape (3,) vs the package's (5,)" in line and "three.h5" in line


def test_cloud_refuses_classes_that_do_not_fit_the_output(package, models):
    from lepton_cloud.served_model import CloudModelMismatch

    with pytest.raises(CloudModelMismatch, match="3 classes named for an output of 5 values"):
        cloud(package, source=str(models["big"]), classes=("a", "b", "c"))


# ---- the gateway refuses a cloud that does not match -------------------------------------------------------


@pytest.fixture(scope="module")
def other_clouds(package, models, tmp_path_factory):
    """A cloud serving 3 outputs under the package's name, and one stating another class order."""
    three = package_with_output(tmp_path_factory.mktemp("three") / "pkg", package, models["three"], 3, "abc")
    servers = {"three": cloud(three)[0], "reordered": cloud(package, source=str(models["big"]),
                                                              classes=tuple(reversed(CLASSES)))[0]}
    yield {k: s.url for k, s in servers.items()}
    for s in servers.values():
        s.stop()


def test_serve_refuses_a_cloud_of_another_output_shape_in_one_line(package, other_clouds):
    url = other_clouds["three"].replace("http://", "http://user:secret@")
    line = one_line_error(run_cli("serve", package, "--cloud", url, "--port", "0", timeout=60), "serve")
    assert "output shape (3,) vs the package's (5,)" in line and "does not match the package" in line
    assert "secret" not in line and other_clouds["three"].removeprefix("http://") in line


def test_serve_refuses_a_cloud_of_another_class_order_in_one_line(package, other_clouds):
    line = one_line_error(run_cli("serve", package, "--cloud", other_clouds["reordered"], "--port", "0",
                                  timeout=60), "serve")
    assert "class order (c4, c3, c2, c1, c0) vs the package's (c0, c1, c2, c3, c4)" in line


def test_serve_checks_at_start_and_warns_when_the_cloud_is_down(package, other_clouds):
    from lepton_hls.cli import build_parser
    from lepton_hls.commands.serve import check_cloud_at_start

    def args(url):
        return build_parser().parse_args(["serve", str(package), "--cloud", url])

    with pytest.raises(CloudContractError, match="class order"):
        check_cloud_at_start(args(other_clouds["reordered"]))
    checked, warnings = check_cloud_at_start(args(f"http://127.0.0.1:{free_port()}"))
    assert not checked and len(warnings) == 1
    assert warnings[0].startswith("cloud contract not checked at start: the cloud is unreachable")
    assert warnings[0].endswith("checked on first contact")


def test_a_mismatch_found_on_first_contact_leaves_the_answers_to_the_edge(package, other_clouds):
    m = load_manifest(package)
    contract = ModelContract.from_manifest(m)
    cascade = RoutingPolicy(confidence_threshold=1.5)  # every sample is unsure: all go on to the cloud
    with running_gateway(package, NumpyBoardBackend(package), other_clouds["reordered"], policy=cascade,
                         cloud_kw={"contract": contract}) as (gw, gateway):
        for seed in range(3):
            r = httpx.post(f"{gw.url}/v2/models/{m.model.name}/infer", json=_body(_x(2, seed)))
            params = r.json()["parameters"]
            assert r.status_code == 200 and params["served_by"] == "edge", r.json()
            assert "does not match the package" in params["degraded_because"]
            assert other_clouds["reordered"].removeprefix("http://") not in json.dumps(r.json())
        assert gateway.cloud.breaker.state == "closed"


def test_models_without_classes_state_none():
    autoencoder = shared_package("autoencoder")
    server, service = cloud(autoencoder)
    try:
        output = httpx.get(f"{server.url}/v2/models/{service.name}").json()["outputs"][0]
        assert output["shape"] == [-1, 8] and "parameters" not in output
    finally:
        server.stop()


# ---- reading other servers' metadata ----------------------------------------------------------------------


TRITON_METADATA = {  # Triton 2.x, a TensorFlow SavedModel with max_batch_size > 0
    "name": "tiny_classifier", "versions": ["1"], "platform": "tensorflow_savedmodel",
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}],
    "outputs": [{"name": "softmax", "datatype": "FP32", "shape": [-1, 5]}],
}


def test_triton_style_metadata_parses_and_its_missing_class_order_is_a_note():
    cloud_side = ModelContract.from_metadata(TRITON_METADATA, "features", "softmax")
    assert (cloud_side.input_shape, cloud_side.output_shape, cloud_side.classes) == ((16,), (5,), None)
    expected = ModelContract((16,), (5,), CLASSES, "features", "softmax")
    notes = check(expected, cloud_side, "tiny_classifier")
    assert len(notes) == 1 and "does not state its class order" in notes[0]


def test_metadata_variants():
    # no batch dimension (Triton, max_batch_size 0); a variable dimension; tensors picked by name
    meta = {"inputs": [{"name": "other", "shape": [3]}, {"name": "x", "shape": [-1, 8, -1]}],
            "outputs": [{"name": "y", "shape": [10]}]}
    c = ModelContract.from_metadata(meta, "x", "y")
    assert (c.input_shape, c.output_shape, c.input_name) == ((8, -1), (10,), "x")
    assert compare(ModelContract((8, 8), (10,)), c) == ([], [])
    assert compare(ModelContract((8, 8), (4,)), c)[0] == ["output shape (10,) vs the package's (4,)"]
    # MLServer states no outputs unless configured: the output is not compared, and says so
    c = ModelContract.from_metadata({"inputs": [{"name": "x", "shape": [-1, 16]}], "outputs": []})
    assert compare(ModelContract((16,), (5,)), c) == ([], ["output shape"])
    # a class order as lepton-hls states it, and one of another length
    c = ModelContract.from_metadata({"inputs": [], "outputs": [
        {"name": "y", "shape": [-1, 3], "parameters": {"classes": json.dumps(["a", "b", "c"])}}]})
    assert c.classes == ("a", "b", "c")
    diffs, _ = compare(ModelContract(None, (3,), ("a", "b")), c)
    assert diffs == ["3 classes (a, b, c) vs the package's 2 (a, b)"]
    for bad in ([], {"inputs": "x"}, {"inputs": [{"shape": ["16"]}]},
                {"outputs": [{"shape": [-1, 2], "parameters": {"classes": "not json"}}]}):
        with pytest.raises(UnreadableMetadata):
            ModelContract.from_metadata(bad)


def test_the_message_names_what_differs_and_where():
    e = CloudContractError("m", ["output shape (5,) vs the package's (10,)"]).at("http://***@host:8001")
    assert str(e) == ("the cloud model 'm' at http://***@host:8001 does not match the package: "
                      "output shape (5,) vs the package's (10,)")
