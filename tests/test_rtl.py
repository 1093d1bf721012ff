"""RTL path: the da4ml tracer, the Verilator emulator against the C simulation, and the AXI4-Stream wrapper
co-simulated with cocotb. The default tests use a 16-8-4 QKeras network; zoo models are in the slow suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 16-8-4 QKeras MLP with 6-bit weights and a quantized_relu, saved as a full-model .h5."""
    import tensorflow as tf
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu

    inp = tf.keras.Input((16,), name="inp")
    x = QDense(8, kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(6, 0, alpha=1),
               name="fc1")(inp)
    x = QActivation(quantized_relu(6), name="relu1")(x)
    x = QDense(4, kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(6, 0, alpha=1),
               name="fc2")(x)
    model = tf.keras.Model(inp, x)
    rng = np.random.RandomState(1)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.randn(*w.shape) * 0.5 for w in layer.get_weights()])
    path = tmp_path_factory.mktemp("tiny_model") / "tiny_mlp.h5"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_rtl(build_pkg, tiny_model):
    """A package of the tiny model with its RTL written, checked and recorded."""
    from lepton_hls.rtl.package import rtl_package

    pkg = build_pkg(str(tiny_model), samples=200)
    result = rtl_package(pkg, clock_ns=5.0, check_samples=10000, log=lambda *_: None)
    return pkg, result


def test_verilator_emulation_bit_identical_to_csim(tiny_rtl):
    from lepton_hls.rtl.package import check_inputs
    from lepton_host.emulator import CsimEmulator
    from lepton_host.rtl_emulator import RtlEmulator

    pkg, result = tiny_rtl
    assert result["check"]["reference"] == "csim" and result["check"]["samples"] == 10000
    assert result["bit_exact"] and result["check"]["identical_rows"] == 1.0
    # Independently of the command's own check: fresh inputs, both emulators loaded from the package.
    rtl, csim = RtlEmulator(pkg), CsimEmulator(pkg)
    raw = check_inputs(rtl.input.format, rtl.input.shape, 10000, seed=7)
    got, ref = rtl.predict_raw(raw), csim.predict_raw(raw)
    assert got.shape == ref.shape == (10000, 4)
    assert np.array_equal(got, ref)
    assert np.ptp(ref) > 0  # the comparison is not between two constant outputs


def test_rtl_report_recorded_in_manifest(tiny_rtl):
    from lepton_host.manifest import load_manifest

    pkg, result = tiny_rtl
    m = load_manifest(pkg)  # verifies every artifact's sha256, the new rtl/ files included
    rep = m.reports["rtl"]
    assert rep["latency_cycles"] >= 2 and rep["initiation_interval"] == 1
    assert rep["latency_ns"] == rep["latency_cycles"] * 5.0
    assert rep["lut_estimate"] > 100 and rep["ff_estimate"] > 0 and rep["dsp_estimate"] == 0
    assert rep["fits_board"] is True and rep["uncovered_layers"] == []
    assert any(a.startswith("rtl/verilog/src/") and a.endswith(".v") for a in m.artifacts)
    assert any(a.startswith("rtl/vhdl/src/") and a.endswith(".vhd") for a in m.artifacts)
    assert json.loads((pkg / "reports" / "rtl.json").read_text())["bit_exact"] is True


def test_cocotb_stream_wrapper_with_backpressure(tiny_rtl, tmp_path_factory):
    sys.path.insert(0, str(ROOT / "sim" / "cocotb"))
    from runner import run_cosim

    pkg, result = tiny_rtl
    r = run_cosim(pkg, samples=150, seed=3, idle_p=0.3, stall_p=0.4, build_dir=tmp_path_factory.mktemp("cosim"))
    assert r["samples"] == 150 and r["mismatched_rows"] == 0 and r["batches"] > 1
    # First output word: the input sample's words, lane by lane, plus the core's pipeline, plus packing.
    assert r["first_output_latency_cycles"] > result["latency_cycles"]


def test_cli_rtl_refuses_a_non_package(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lepton_hls.cli", "rtl", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "lepton-hls rtl: error:" in r.stderr


def test_emulated_board_serves_the_package_from_the_rtl_model(tiny_rtl):
    pytest.importorskip("pynq")
    from lepton_host import board
    from lepton_host.emulator import CsimEmulator
    from lepton_host.manifest import load_manifest
    from lepton_host.rtl_emulator import load_rtl_emulator
    from lepton_host.runtime import Accelerator

    pkg, _ = tiny_rtl
    m = load_manifest(pkg)
    d = board.enable()
    d.clear()
    d.attach(load_rtl_emulator(pkg), model_sha256=m.model.sha256)
    try:
        acc = Accelerator.load(pkg, device=d, max_batch=8, timeout_s=30.0)
        x = np.random.default_rng(5).uniform(-6, 6, size=(20, 16))  # 20 > 8: streamed in chunks
        np.testing.assert_array_equal(acc.predict(x), CsimEmulator(pkg).predict(m.preprocessing.apply(x)))
        acc.close()
    finally:
        d.detach(m.model.sha256)
        d.clear()
