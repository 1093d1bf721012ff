"""`lepton-hls calibrate` on a real package: the bit-exact edge (the tiny QKeras MLP built by hls4ml) against a
different cloud model, on labelled data a user would bring as an .npz. The threshold it picks is the same every
time, lands in serving.json, and is what the gateway escalates on: the samples the gateway sends to the cloud
are exactly those the criterion finds unsure, and their answers are the cloud model's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cli_runner import run_cli


@pytest.fixture(scope="module")
def setup(jet_package, tmp_path_factory):
    """(package copy, cloud model .h5, held-out .npz, x, labels, cloud outputs, edge outputs). The edge is the
    jet tagger's bit-exact engine; the cloud a different float Keras MLP of the same contract. Labels are the
    cloud model's argmax on 9 of 10 samples (the cloud is the stronger model here) and the edge's on the
    rest."""
    import tensorflow as tf

    from lepton_host.serving.edge import open_edge_backend

    root = tmp_path_factory.mktemp("calibrate")
    pkg = root / "pkg"
    shutil.copytree(jet_package, pkg)  # calibrate writes serving.json: not into the shared build
    tf.keras.utils.set_random_seed(7)
    inp = tf.keras.Input((16,), name="features")
    h = tf.keras.layers.Dense(32, activation="relu")(inp)
    out = tf.keras.layers.Dense(5, activation="softmax")(h)
    cloud = tf.keras.Model(inp, out)
    cloud_h5 = root / "bigger.h5"
    cloud.save(cloud_h5)
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (240, 16))
    cloud_y = cloud(x.astype(np.float32)).numpy()
    backend = open_edge_backend(pkg, "emulator", "fast")
    edge_y = backend.predict(x)
    backend.close()
    labels = np.where(np.arange(x.shape[0]) % 10 == 0, edge_y.argmax(1), cloud_y.argmax(1))
    np.savez(root / "heldout.npz", x=x, y=labels)
    return pkg, cloud_h5, root / "heldout.npz", x, labels, cloud_y, edge_y


def _calibrate(pkg, cloud, data, *extra):
    r = run_cli("calibrate", pkg, "--cloud", cloud, "--data", data, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _in_process(pkg, cloud_h5, data, target, criteria=None):
    """The library behind the command, in this process (TensorFlow is loaded already)."""
    from lepton_host.manifest import load_manifest
    from lepton_host.serving.edge import open_edge_backend

    from lepton_hls.cascade_calibration import calibrate, load_heldout
    from lepton_hls.cascade_cloud_local import local_cloud

    manifest = load_manifest(pkg)
    backend = open_edge_backend(pkg, "emulator", "fast")
    try:
        return calibrate(pkg, manifest, load_heldout(str(data), manifest), backend.predict,
                         local_cloud(str(cloud_h5), pkg, manifest), target, criteria=criteria, latency_samples=5)
    finally:
        backend.close()


def test_calibration_is_repeatable_and_recorded(setup):
    pkg, cloud_h5, data, x, labels, cloud_y, edge_y = setup
    from lepton_hls.cascade_frontier import Target

    cli = _calibrate(pkg, cloud_h5, data, "--max-offload", "0.3")
    for _ in range(2):  # the same choice every time, and the command's is the library's
        again = _in_process(pkg, cloud_h5, data, Target(max_offload=0.3)).summary()
        for key in ("threshold", "criterion", "cascade_accuracy", "offload_fraction", "edge_accuracy",
                    "cloud_accuracy"):
            assert again[key] == cli[key], key
    assert cli["serving_json"] == str(pkg / "serving.json")
    # The accuracies are those of the two models on these labels.
    assert cli["edge_accuracy"] == pytest.approx((edge_y.argmax(1) == labels).mean())
    assert cli["cloud_accuracy"] == pytest.approx((cloud_y.argmax(1) == labels).mean(), abs=1 / labels.size)
    assert cli["offload_fraction"] <= 0.3 and cli["cascade_accuracy"] > cli["edge_accuracy"]
    assert (pkg / "calibration" / "frontier.png").stat().st_size > 0

    from lepton_host.manifest import load_manifest
    from lepton_host.serving.routing import RoutingPolicy

    manifest = load_manifest(pkg)  # serving.json is hashed into the manifest: the package still verifies
    policy = RoutingPolicy.for_package(manifest, pkg)
    assert policy.confidence_threshold == cli["threshold"]
    assert policy.cascade_criterion == cli["criterion"]


def test_the_gateway_escalates_on_the_calibrated_threshold(setup):
    """The served system is the calibrated one: same samples escalated, cloud answers for them."""
    pkg, cloud_h5, data, x, labels, cloud_y, edge_y = setup
    from lepton_cloud.server import CloudServerConfig, ModelChoice, create_cloud_server
    from lepton_host.serving.cascade_criteria import CRITERIA
    from lepton_host.serving.edge import open_edge_backend
    from lepton_host.serving.runner import ServerThread
    from serving_support import metric_value, running_gateway

    from lepton_hls.cascade_frontier import Target
    from lepton_hls.cascade_replay import replay
    from lepton_hls.commands.serving_policy import install_policy

    cal = _in_process(pkg, cloud_h5, data, Target(accuracy=0.8), criteria=["entropy"])
    install_policy(pkg, cal.routing())
    chosen = cal.summary()
    app, _ = create_cloud_server(pkg, CloudServerConfig(model=ModelChoice(str(cloud_h5))))
    with ServerThread(app) as cloud, \
            running_gateway(pkg, open_edge_backend(pkg, "emulator", "fast"), cloud.url) as (gw, service):
        assert service.router.policy.confidence_threshold == chosen["threshold"]
        got = replay(gw.url, service.name, service.input.name, x, labels)
        unsure = CRITERIA["entropy"].unsure(x, edge_y, chosen["threshold"])  # identity preprocessing
        assert unsure.any() and not unsure.all()
        assert list(got.served_by) == ["cloud" if u else "edge" for u in unsure]
        assert got.accuracy() == pytest.approx(chosen["cascade_accuracy"], abs=1 / labels.size)
        series = f'lepton_gateway_samples_total{{model="{service.name}",path="cloud",reason="low_confidence"}}'
        assert metric_value(gw.url, series) == unsure.sum()


def test_bad_held_out_data_is_refused_in_one_line(setup, tmp_path):
    pkg, cloud_h5, *_ = setup
    cases = {
        "wrong_shape.npz": dict(x=np.zeros((10, 8)), y=np.zeros(10, int)),
        "no_labels.npz": dict(x=np.zeros((10, 16))),
        "bad_labels.npz": dict(x=np.zeros((10, 16)), y=np.full(10, 9)),
    }
    for name, arrays in cases.items():
        np.savez(tmp_path / name, **arrays)
        r = run_cli("calibrate", pkg, "--cloud", cloud_h5, "--data", tmp_path / name)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert name in r.stderr
    r = run_cli("calibrate", pkg, "--cloud", cloud_h5, "--data", tmp_path / "no_labels.npz", "--target-accuracy", "98")
    assert r.returncode != 0 and "0.98 means 98%" in r.stderr
    r = run_cli("calibrate", pkg, "--cloud", cloud_h5, "--data", tmp_path / "no_labels.npz", "--criterion",
                "reconstruction_error")
    assert r.returncode != 0 and "applies to autoencoders" in r.stderr
