"""Slow suite: every zoo model and the example models through `lepton-hls rtl`, bit-identical to the C
simulation on 10,000 inputs (before an uncovered softmax tail: to the package's engine at that layer), and
the stream wrapper co-simulated on a larger model."""

from __future__ import annotations

import sys

import pytest

from paths import ROOT, example_model, require

MODELS = ["anomaly_ae", "digits_cnn", "jet_tagger", example_model("qkeras_3layer"), example_model("KERAS_3layer")]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def rtl_pkg(build_pkg):
    cache: dict = {}

    def get(model):
        if model not in cache:
            from lepton_hls.rtl.package import rtl_package

            pkg = build_pkg(require(model), samples=200)
            cache[model] = (pkg, rtl_package(pkg, check_samples=10000, log=lambda *_: None))
        return cache[model]

    return get


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("model", MODELS, ids=["anomaly_ae", "digits_cnn", "jet_tagger", "qkeras_3layer", "KERAS_3layer"])
def test_rtl_bit_identical_on_10000_inputs(rtl_pkg, model):
    pkg, result = rtl_pkg(model)
    chk = result["check"]
    assert chk["samples"] == 10000 and chk["max_abs_raw_diff"] == 0 and result["bit_exact"]
    if result["uncovered_layers"]:
        assert all("softmax" in u for u in result["uncovered_layers"])
    else:
        assert chk["reference"] == "csim"


@pytest.mark.timeout(1800)
def test_power_of_two_weights_are_refused_by_name(build_pkg):
    from lepton_hls.rtl.errors import RtlCoverageError
    from lepton_hls.rtl.package import rtl_package

    pkg = build_pkg(require(example_model("qkeras_mnist_dense")), samples=200)
    with pytest.raises(RtlCoverageError, match=r"layer \w+ \(Dense\): exponential \(power-of-two\) weights"):
        rtl_package(pkg, check_samples=0, log=lambda *_: None)


@pytest.mark.timeout(1800)
def test_a_cnn_too_large_for_one_pipeline_is_refused_by_name(build_pkg):
    from lepton_hls.rtl.errors import RtlCoverageError
    from lepton_hls.rtl.package import rtl_package

    pkg = build_pkg(require(example_model("qkeras_mnist_cnn")), samples=200)
    with pytest.raises(RtlCoverageError, match=r"layer \w+: the model needs [\d,]+ multiplications"):
        rtl_package(pkg, check_samples=0, log=lambda *_: None)


@pytest.mark.timeout(1800)
def test_cocotb_on_the_anomaly_autoencoder(rtl_pkg, tmp_path):
    sys.path.insert(0, str(ROOT / "sim" / "cocotb"))
    from runner import run_cosim

    pkg, result = rtl_pkg("anomaly_ae")
    r = run_cosim(pkg, samples=200, seed=9, idle_p=0.25, stall_p=0.5, build_dir=tmp_path / "cosim")
    assert r["mismatched_rows"] == 0 and r["first_output_latency_cycles"] > result["latency_cycles"]
