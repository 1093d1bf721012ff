"""The vendor-tool boundary: report readers on real report files, tool discovery, streamed runs, and the
`synth` flow against stand-in executables that record their argv and write the tools' report files.

The tools are the boundary: what runs here is our code (discovery, command lines, build options, parsing,
manifest update); the stand-ins in tests/data/vendor_reports/stubs/ only play the executables."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from lepton_host.fixedpoint import FixedFormat
from lepton_host.manifest import HlsInfo, Manifest, ModelInfo, TensorSpec, load_manifest
from lepton_hls.vendor import reports, tools
from lepton_hls.vendor.hls4ml_build import run_hls4ml_build
from cli_runner import run_cli

DATA = Path(__file__).parent / "data" / "vendor_reports"
STUBS = DATA / "stubs"
HLS4ML_TEMPLATES = Path(__import__("hls4ml").__file__).parent / "templates"


# ---- report readers on the tools' own files ----------------------------------------------------------------
def test_csynth_xml_from_vivado_hls_2020_1():
    r = reports.parse_csynth_xml(DATA / "hls4ml_vivado2020.1_myproject_csynth.xml")
    assert (r.top, r.part, r.tool_version) == ("myproject", "xc7z020-clg400-1", "2020.1")
    assert (r.target_clock_ns, r.estimated_clock_ns) == (5.0, 4.049)
    assert (r.latency_min, r.latency_max, r.interval_min, r.interval_max) == (10, 10, 8, 8)
    assert r.pipeline_type == "dataflow"
    assert r.resources == {"BRAM_18K": 0, "DSP": 73, "FF": 7969, "LUT": 2532, "URAM": 0}
    assert r.available == {"BRAM_18K": 280, "DSP": 220, "FF": 106400, "LUT": 53200, "URAM": 0}
    assert r.to_dict()["fmax_mhz"] == pytest.approx(1000 / 4.049, abs=1e-3)


def test_csynth_text_report_agrees_with_the_xml():
    xml = reports.parse_csynth_xml(DATA / "hls4ml_vivado2020.1_myproject_csynth.xml").to_dict()
    rpt = reports.parse_csynth_rpt(DATA / "hls4ml_vivado2020.1_myproject_csynth.rpt").to_dict()
    for d in (xml, rpt):
        d.pop("source")
    assert rpt == xml


def test_vivado_utilization_report():
    u = reports.parse_utilization(DATA / "hls4ml_vivado2020.1_vivado_synth.rpt")
    assert (u.design, u.device, u.state) == ("myproject", "7z020clg400-1", "Synthesized")
    assert u.tool_version.startswith("Vivado v.2020.1")
    assert u.used == {"LUT": 1526, "FF": 2428, "BRAM_TILE": 0, "DSP": 66, "IOB": 384}
    assert u.available["LUT"] == 53200 and u.available["DSP"] == 220
    assert u.percent["DSP"] == 30.0 and u.percent["IOB"] == 307.2


def test_vivado_timing_summary_that_misses_timing():
    t = reports.parse_timing_summary(DATA / "lakeroad_vivado2021.2_zu3eg_timing_summary_route.rpt")
    assert (t.design, t.device) == ("main", "xczu3eg-sbva484")
    assert (t.wns_ns, t.tns_ns, t.failing_setup_endpoints) == (-0.089, -0.762, 20)
    assert (t.whs_ns, t.ths_ns, t.failing_hold_endpoints, t.wpws_ns) == (0.045, 0.0, 0, 2.225)
    assert t.met is False
    assert t.clocks == [{"name": "clk", "period_ns": 5.0, "frequency_mhz": 200.0}]


def test_timing_summary_met_when_slack_is_positive(tmp_path):
    text = (DATA / "lakeroad_vivado2021.2_zu3eg_timing_summary_route.rpt").read_text()
    text = text.replace("     -0.089       -0.762                     20", "      0.311        0.000                      0")
    text = text.replace("Timing constraints are not met.", "All user specified timing constraints are met.")
    p = tmp_path / "met.rpt"
    p.write_text(text)
    t = reports.parse_timing_summary(p)
    assert t.met is True and t.wns_ns == 0.311 and t.failing_setup_endpoints == 0


def test_cosim_report_layout():
    c = reports.parse_cosim_rpt(DATA / "cosim_layout_myproject_cosim.rpt")
    assert (c.rtl, c.status, c.passed) == ("Verilog", "Pass", True)
    assert (c.latency_min, c.latency_avg, c.latency_max) == (10, 10, 10)
    assert (c.interval_min, c.interval_max) == (8, 8)


@pytest.mark.parametrize(
    "reader, sample",
    [
        (reports.parse_timing_summary, "hls4ml_vivado2020.1_vivado_synth.rpt"),
        (reports.parse_utilization, "hls4ml_vivado2020.1_myproject_csynth.rpt"),
        (reports.parse_csynth_rpt, "lakeroad_vivado2021.2_zu3eg_timing_summary_route.rpt"),
        (reports.parse_csynth_xml, "hls4ml_vivado2020.1_myproject_csynth.rpt"),
        (reports.parse_cosim_rpt, "hls4ml_vivado2020.1_myproject_csynth.rpt"),
    ],
)
def test_a_report_of_another_kind_is_refused(reader, sample):
    with pytest.raises(reports.ReportError, match=sample.split("_")[0]):
        reader(DATA / sample)


def test_missing_report_names_the_file(tmp_path):
    with pytest.raises(reports.ReportError, match="timing.rpt not found"):
        reports.parse_timing_summary(tmp_path / "timing.rpt")


# ---- tool discovery and runs ------------------------------------------------------------------------------
def install_stubs(bin_dir: Path, names=("vitis_hls", "vivado")) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = STUBS / ("vitis_hls" if name in ("vitis_hls", "vitis-run") else name)
        dst = bin_dir / name
        shutil.copyfile(src, dst)
        dst.chmod(dst.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def stub_env(tmp_path, monkeypatch):
    """PATH with the stand-ins first; returns a reader for the argv they recorded."""
    bin_dir = tmp_path / "bin"
    install_stubs(bin_dir)
    log = tmp_path / "stub_calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LEPTON_STUB_LOG", str(log))
    monkeypatch.setenv("LEPTON_STUB_SAMPLES", str(DATA))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls


def no_vendor_path(tmp_path) -> str:
    """A PATH with the system tools but no Xilinx tool, whatever the machine has installed."""
    keep = [d for d in os.environ["PATH"].split(os.pathsep) if d and not any(
        (Path(d) / t).exists() for t in ("vivado", "vitis_hls", "vitis-run"))]  # fmt: skip
    return os.pathsep.join(keep)


def test_tool_off_path_is_not_found_and_the_error_says_how_to_fix_it(tmp_path):
    # A working executable that exists but is not on PATH must not be picked up.
    install_stubs(tmp_path / "elsewhere")
    with pytest.raises(tools.ToolNotFoundError) as e:
        tools.find_tool(["vivado"], "build the overlay bitstream", env_path=no_vendor_path(tmp_path))
    msg = str(e.value)
    assert "`vivado` not found on PATH" in msg and "build the overlay bitstream" in msg
    assert "settings64.sh" in msg


def test_tool_preference_order(tmp_path):
    install_stubs(tmp_path / "bin", names=("vitis_hls", "vitis-run"))
    path = f"{tmp_path / 'bin'}{os.pathsep}{no_vendor_path(tmp_path)}"
    tool = tools.find_tool(["vitis-run", "vitis_hls"], "x", env_path=path)
    assert tool.name == "vitis-run"
    assert tools.hls_command(tool, "build_prj.tcl")[1:] == ["--mode", "hls", "--tcl", "build_prj.tcl"]
    legacy = tools.find_tool(["vitis_hls"], "x", env_path=path)
    assert tools.hls_command(legacy, "build_prj.tcl")[1:] == ["-f", "build_prj.tcl"]


def test_run_tool_streams_lines_and_reports_failures(tmp_path):
    seen = []
    script = "import sys\nfor i in range(3): print(f'line {i}', flush=True)\nprint('oops', file=sys.stderr)\n"
    run = tools.run_tool([sys.executable, "-c", script], cwd=tmp_path, log=tmp_path / "ok.log", progress=seen.append)
    assert seen == ["line 0", "line 1", "line 2", "oops"]
    assert "line 2" in (tmp_path / "ok.log").read_text() and run.returncode == 0
    with pytest.raises(tools.ToolFailedError) as e:
        tools.run_tool([sys.executable, "-c", script + "sys.exit(3)"], cwd=tmp_path, log=tmp_path / "bad.log")
    assert "status 3" in str(e.value) and "bad.log" in str(e.value) and "oops" in str(e.value)


# ---- hls4ml build_prj.tcl flow (synth) ----------------------------------------------------------------------
def fake_hls_project(root: Path) -> Path:
    """hls4ml's real build_prj.tcl and vivado_synth.tcl; the firmware is irrelevant to the stand-in tools."""
    hls = root / "hls"
    hls.mkdir(parents=True)
    shutil.copy(HLS4ML_TEMPLATES / "vitis" / "build_prj.tcl", hls / "build_prj.tcl")
    shutil.copy(HLS4ML_TEMPLATES / "vivado" / "vivado_synth.tcl", hls / "vivado_synth.tcl")
    return hls


def test_hls4ml_build_runs_the_tool_with_the_requested_steps_and_parses_its_reports(tmp_path, stub_env):
    hls = fake_hls_project(tmp_path)
    result = run_hls4ml_build(hls, cosim=True, vsynth=True)
    calls = stub_env()
    assert [c["tool"] for c in calls] == ["vitis_hls", "vivado"]
    assert calls[0]["argv"] == ["-f", "build_prj.tcl"] and Path(calls[0]["cwd"]) == hls
    assert calls[1]["argv"][-2:] == ["-source", "vivado_synth.tcl"]
    opts = (tmp_path / "build_opt_seen.tcl").read_text()  # what the tool read (the stand-in keeps a copy)
    assert "synth      1" in opts and "cosim      1" in opts and "vsynth     1" in opts and "csim       0" in opts
    assert not (hls / "build_opt.tcl").exists()  # the project is left as it was
    assert result.csynth.latency_max == 10 and result.csynth.resources["DSP"] == 73
    assert result.cosim.passed and result.vivado.used["LUT"] == 1526
    assert "C/RTL SYNTHESIS COMPLETED" in Path(result.log).read_text()


def test_hls4ml_build_of_a_vivado_backend_project_passes_switches_on_the_command_line(tmp_path, stub_env):
    hls = tmp_path / "hls"
    hls.mkdir()
    shutil.copy(HLS4ML_TEMPLATES / "vivado" / "build_prj.tcl", hls / "build_prj.tcl")  # reads $::argv
    result = run_hls4ml_build(hls, cosim=False, vsynth=False)
    (call,) = stub_env()
    assert call["argv"] == ["-f", "build_prj.tcl", "-tclargs",
                            "reset=1 csim=0 synth=1 cosim=0 validation=0 export=0 vsynth=0 fifo_opt=0"]  # fmt: skip
    assert not (hls / "build_opt.tcl").exists() and result.csynth.latency_max == 10


def test_hls4ml_build_without_cosim_or_vivado(tmp_path, stub_env):
    hls = fake_hls_project(tmp_path)
    result = run_hls4ml_build(hls, cosim=False, vsynth=False)
    assert [c["tool"] for c in stub_env()] == ["vitis_hls"]
    assert result.cosim is None and result.vivado is None and result.csynth.interval_max == 8


def test_hls4ml_build_failure_quotes_the_log(tmp_path, stub_env, monkeypatch):
    monkeypatch.setenv("LEPTON_STUB_FAIL", "1")
    with pytest.raises(tools.ToolFailedError, match="HLS 200-70"):
        run_hls4ml_build(fake_hls_project(tmp_path), cosim=False, vsynth=False)


def _package_with_hls(root: Path) -> Path:
    pkg = root / "pkg"
    hls = fake_hls_project(pkg)
    (hls / "build_opt.tcl").write_text("array set opt {\n    csim 1\n}\n")  # as hls4ml writes it
    m = Manifest(
        model=ModelInfo(name="tiny", source="test", sha256="0" * 64),
        inputs=[TensorSpec("x", (16,), FixedFormat(16, 6))],
        outputs=[TensorSpec("y", (5,), FixedFormat(16, 6))],
        hls=HlsInfo(backend="Vitis", board=None, part="xc7z020clg400-1", clock_ns=10.0, io_type="io_parallel",
                    strategy="Latency", reuse_factor=1),
    )  # fmt: skip
    m.add_artifacts(pkg, [hls / "build_opt.tcl", hls / "build_prj.tcl"])
    m.save(pkg)
    return pkg


def _cli(args, env):
    return run_cli(*args, env=env, timeout=300)


def test_synth_cli_without_vendor_tools_names_the_missing_tool(tmp_path):
    pkg = _package_with_hls(tmp_path)
    install_stubs(tmp_path / "not_on_path")  # present on disk, absent from PATH
    proc = _cli(["synth", str(pkg)], env={**os.environ, "PATH": no_vendor_path(tmp_path)})
    assert proc.returncode == 2
    assert "`vitis-run` or `vitis_hls` not found on PATH" in proc.stderr
    assert "settings64.sh" in proc.stderr and "Traceback" not in proc.stderr


def test_synth_cli_records_the_reports_in_the_manifest(tmp_path, stub_env):
    pkg = _package_with_hls(tmp_path)
    proc = _cli(["synth", str(pkg)], env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert "latency 10-10 cycles, II 8-8" in proc.stdout
    m = load_manifest(pkg)  # digests and artifact checksums still hold after the update
    synth = m.reports["synth"]
    assert synth["csynth"]["resources"]["LUT"] == 2532 and synth["cosim"]["status"] == "Pass"
    assert synth["vivado_synth"]["used"]["DSP"] == 66
    assert "reports/synth.json" in m.artifacts
    assert synth["csynth"]["source"] == "hls/myproject_prj/solution1/syn/report/myproject_csynth.xml"
    assert synth["log"] == "reports/synth.log"
    assert json.loads((pkg / "reports" / "synth.json").read_text()) == synth


def test_vivado_accelerator_reports_are_found_under_the_axi_top(tmp_path):
    from lepton_hls.vendor.hls4ml_build import find_report

    report = tmp_path / "myproject_prj" / "solution1" / "syn" / "report"
    report.mkdir(parents=True)
    shutil.copy(DATA / "hls4ml_vivado2020.1_myproject_csynth.xml", report / "myproject_axi_csynth.xml")
    found = find_report(tmp_path, "myproject", "syn/report", "myproject_csynth.xml")
    assert found == report / "myproject_axi_csynth.xml"
    assert find_report(tmp_path, "myproject", "sim/report", "myproject_cosim.rpt") is None
