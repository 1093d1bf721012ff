"""RTL path: the da4ml tracer, the Verilator emulator against the C simulation, and the AXI4-Stream wrapper
co-simulated with cocotb. The default tests use a 16-8-4 QKeras network (the wrapper elaborated around it; its
co-simulation, like the zoo models, is in the slow suite)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from cli_runner import run_cli
from paths import ROOT


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


def test_stream_wrapper_elaborates_around_the_core(tiny_rtl, tmp_path):
    """The default suite's check of the AXI4-Stream RTL wrapper (co-simulated in the slow suite): Verilator
    elaborates ip/rtl/lepton_axis.v around the package's core with the parameters the co-simulation uses."""
    import subprocess

    sys.path.insert(0, str(ROOT / "sim" / "cocotb"))
    from runner import axis_parameters, rtl_sources

    from lepton_hls.rtl.toolchain import verilator_env
    from lepton_host.rtl_emulator import RtlEmulator

    pkg, _ = tiny_rtl
    params = axis_parameters(RtlEmulator(pkg).info)
    argv = ["verilator", "--lint-only", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", "lepton_axis",
            f"-I{pkg / 'rtl' / 'verilog' / 'src'}", *(f"-G{k}={v}" for k, v in params.items()),
            *map(str, rtl_sources(pkg / "rtl"))]
    r = subprocess.run(argv, env=verilator_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "%Error" not in r.stderr


@pytest.mark.slow
def test_cocotb_stream_wrapper_with_backpressure(tiny_rtl, tmp_path_factory):
    sys.path.insert(0, str(ROOT / "sim" / "cocotb"))
    from runner import run_cosim

    pkg, result = tiny_rtl
    r = run_cosim(pkg, samples=150, seed=3, idle_p=0.3, stall_p=0.4, build_dir=tmp_path_factory.mktemp("cosim"))
    assert r["samples"] == 150 and r["mismatched_rows"] == 0 and r["batches"] > 1
    # First output word: the input sample's words, lane by lane, plus the core's pipeline, plus packing.
    assert r["first_output_latency_cycles"] > result["latency_cycles"]


def test_cli_rtl_refuses_a_non_package(tmp_path):
    r = run_cli("rtl", tmp_path / "nope")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "lepton-hls rtl: error:" in r.stderr


def test_the_environment_holds_da4ml_s_compiled_solver(tmp_path, monkeypatch):
    """`make env` compiles da4ml's solver into numba's cache, so that no trace pays the minutes it takes."""
    from lepton_hls.compat.da4ml import solver_is_cached

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert solver_is_cached(), "run `python -m lepton_hls.rtl.warmup` (make env does)"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert not solver_is_cached()
