"""The compile spine: build a package, verify it against the model, and refuse bad input with clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_runner import run_cli
from lepton_host.errors import ChecksumError, ManifestError
from lepton_host.fixedpoint import FixedFormat
from lepton_host.manifest import load_manifest
from paths import example_file, example_model, require


def test_jet_tagger_package_is_bit_exact_before_softmax(jet_package):
    m = load_manifest(jet_package)
    assert m.model.source == "zoo:jet_tagger" and m.model.classes == ("g", "q", "w", "z", "t")
    assert m.input.shape == (16,) and m.output.shape == (5,)
    assert m.input.format == FixedFormat.parse("ap_fixed<16,6>")
    assert m.output.format == FixedFormat.parse("ap_ufixed<16,0,AP_RND,AP_SAT>")
    for rel in ("emulation/csim.so", "engine/graph.json", "model/model.json", "model/weights.h5",
                "hls/firmware/myproject.cpp", "reports/verify.json"):
        assert rel in m.artifacts, rel
    report = json.loads((jet_package / "reports" / "verify.json").read_text())
    assert report["passed"]
    grid = report["sets"][0]
    assert grid["name"] == "on_grid" and grid["identical_rows"] == 1.0 and grid["max_abs_diff"] == 0.0
    assert grid["argmax_agreement"] >= 0.99
    assert all(s["emulator_identical"] for s in report["sets"])


def test_package_predict_matches_the_c_simulation(jet_package):
    import lepton_hls

    pkg = lepton_hls.load(jet_package)
    x = np.random.default_rng(5).standard_normal((300, 16)) * 3
    assert np.array_equal(pkg.predict(x), pkg.predict(x, engine="csim"))


@pytest.fixture(scope="module")
def tiny_package(build_pkg, tiny_model):
    return build_pkg(str(tiny_model), samples=200)


def test_verify_json_exit_status_and_the_users_data(tiny_package, tmp_path):
    """`verify --json --data`: stdout is exactly one JSON object and the exit status says the package passed;
    raw, unstandardized features beyond the input type's range are compared as a set of their own, and the
    report names how many values saturate and how to fix it."""
    pkg = tmp_path / "pkg"  # verify records its result in the package: not in the session's shared one
    shutil.copytree(tiny_package, pkg)
    x = np.random.default_rng(5).normal(0, 1, (64, *load_manifest(pkg).inputs[0].shape))
    x[:, 0] = 500.0  # one feature far beyond ap_fixed<16,6>
    np.save(tmp_path / "raw.npy", x)
    r = run_cli("verify", pkg, "--samples", 100, "--json", "--data", tmp_path / "raw.npy")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)  # stdout is exactly one JSON object
    for key in ("samples", "identical_rows", "argmax_agreement", "max_abs_diff", "layers"):
        assert key in report
    assert report["samples"] == 100
    names = [l["name"] for l in report["layers"]]
    assert names[:2] == ["fc1", "relu1"] and report["layers"][0]["identical_rows"] == 1.0
    assert [s["name"] for s in report["sets"]][-1] == "data"
    note = next(n for n in report["notes"] if "outside the input type" in n)
    assert "input_precision" in note


def test_tampered_artifact_is_refused(jet_package, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(jet_package, pkg)
    weights = sorted((pkg / "hls" / "firmware" / "weights").glob("w2.*"))[0]
    weights.write_text(weights.read_text().replace("0", "1", 1))
    with pytest.raises(ChecksumError, match="sha256 mismatch for hls/firmware/weights/w2"):
        load_manifest(pkg)
    r = run_cli("verify", pkg)
    assert r.returncode == 2 and "sha256 mismatch" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_and_edited_manifests_are_refused(jet_package, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(jet_package, pkg)
    manifest = pkg / "manifest.json"
    good = manifest.read_text()
    data = json.loads(good)
    data["inputs"][0]["format"]["width"] = 8
    manifest.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="edited after it was written"):
        load_manifest(pkg)
    manifest.write_text(good[: len(good) // 2])
    r = run_cli("verify", pkg)
    assert r.returncode == 2 and "not valid JSON" in r.stderr and "Traceback" not in r.stderr
    data = json.loads(good)
    data["version"] = 99
    manifest.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="schema version 99"):
        load_manifest(pkg)


def cli_in_process(capsys, *args) -> tuple[int, str]:
    """`lepton-hls ARGS...` run by the CLI's own entry point in this process, for refusals that come after the
    model is loaded (TensorFlow is loaded here already; a subprocess spends seconds importing it): (exit status,
    stderr)."""
    from lepton_hls.cli import main

    capsys.readouterr()
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def test_bad_models_get_clear_errors(tmp_path, capsys):
    arch = example_file("qkeras_3layer.json")
    lonely = tmp_path / "lonely.json"
    shutil.copyfile(arch, lonely)
    r = run_cli("build", lonely, "--out", tmp_path / "a")
    assert r.returncode == 2 and "no weights for" in r.stderr and "Traceback" not in r.stderr

    status, err = cli_in_process(capsys, "build", arch, "--weights", example_file("qkeras_mnist_dense_weights.h5"),
                                 "--out", tmp_path / "b")
    assert status == 2 and "do not fit the architecture" in err and len(err.strip().splitlines()) == 1

    spec = json.loads(arch.read_text())
    spec["config"]["layers"][2]["class_name"] = "LocallyConnected1D"
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(spec))
    r = run_cli("build", odd, "--weights", example_file("qkeras_3layer_weights.h5"), "--out", tmp_path / "c")
    # the user's layer name, its class, and the supported alternatives, on one line
    assert r.returncode == 2 and "'relu1': class LocallyConnected1D is not supported" in r.stderr
    assert "Supported alternatives: Conv1D" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    r = run_cli("build", "no_such_model", "--out", tmp_path / "d")
    assert r.returncode == 2 and "jet_tagger" in r.stderr

    r = run_cli("build", "jet_tagger", "--out", tmp_path / "e", "--board", "de10")
    assert r.returncode == 2 and "pynq-z2" in r.stderr

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    status, err = cli_in_process(capsys, "build", "jet_tagger", "--out", occupied)
    assert status == 2 and "--force" in err and (occupied / "keep.txt").read_text() == "mine"


def test_unknown_config_key_is_named(tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text("backend: Vitis\nreuse: 4\n")
    r = run_cli("build", "jet_tagger", "--config", cfg, "--out", tmp_path / "x")
    assert r.returncode == 2 and "unknown config key(s) reuse" in r.stderr


def test_board_selects_vivado_accelerator():
    from lepton_hls.build_config import load_config

    cfg = load_config(board="pynq-z2")
    assert cfg.backend == "VivadoAccelerator" and cfg.part == "xc7z020clg400-1" and cfg.clock_ns == 10.0


def _po2_relu_model(path: Path):
    """Two hls4ml weak spots in one tiny model: power-of-two weights (hls4ml's product type drops bits) and a
    float ReLU fused into a conv ahead of a quantized ReLU (hls4ml gives it a 16-bit default type)."""
    import tensorflow as tf
    from qkeras import QActivation, QConv2D, QDense

    tf.keras.utils.set_random_seed(1)
    inp = tf.keras.Input((6, 6, 1), name="x")
    h = QConv2D(3, 3, kernel_quantizer="quantized_po2(5,1)", bias_quantizer="quantized_bits(8,2,alpha=1)",
                activation="relu", name="conv")(inp)
    h = QActivation("quantized_relu(4,1)", name="qrelu")(h)
    h = tf.keras.layers.Flatten(name="flat")(h)
    # no softmax on top: its tables would cost a probe compile and have nothing to do with these two
    out = QDense(4, kernel_quantizer="quantized_po2(6,1)", bias_quantizer="quantized_bits(8,3,alpha=1)",
                 name="dense")(h)
    model = tf.keras.Model(inp, out)
    path.write_text(model.to_json())
    model.save_weights(str(path.with_name(path.stem + "_weights.h5")))


def test_power_of_two_weights_and_fused_relu_are_exact(build_pkg, tmp_path_factory):
    arch = tmp_path_factory.mktemp("po2") / "po2net.json"
    _po2_relu_model(arch)
    pkg = build_pkg(str(arch), samples=300)
    report = json.loads((pkg / "reports" / "verify.json").read_text())
    grid = report["sets"][0]
    assert grid["identical_rows"] == 1.0, report["first_difference"]
    assert all(s["emulator_identical"] for s in report["sets"])
    assert "nnet_mult.h" in " ".join(report["notes"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qkeras_3layer", "qkeras_mnist_dense", "qkeras_mnist_cnn", "KERAS_3layer",
                                  "KERAS_conv2d_model"])
def test_every_example_model_meets_its_fidelity(build_pkg, name):
    pkg = build_pkg(require(example_model(name)), samples=1000)
    report = json.loads((pkg / "reports" / "verify.json").read_text())
    assert report["passed"], report["first_difference"]


def test_package_is_relocatable(jet_package, tmp_path):
    """The C simulation finds its weights beside itself: no build path is baked into it, and a copied package
    computes the same as the original."""
    from lepton_host.emulator import CsimEmulator, FastEmulator

    assert str(jet_package).encode() not in (jet_package / "emulation" / "csim.so").read_bytes()
    moved = tmp_path / "elsewhere" / "jet"
    shutil.copytree(jet_package, moved)
    x = np.random.default_rng(2).standard_normal((50, 16))
    assert np.array_equal(CsimEmulator(moved).predict(x), FastEmulator(jet_package).predict(x))
