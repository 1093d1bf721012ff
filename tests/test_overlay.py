"""`lepton-hls overlay`: the generated Vivado / Vitis HLS scripts, checked by running them in a real Tcl
interpreter (Python's embedded Tcl 8.6) whose Vivado commands only record what they are asked to build:
cells, interface and net connections, address assignments, IP properties. Then the command end to end,
without the vendor tools on PATH (clear error) and with stand-in executables that write the tools' files."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from lepton_host.fixedpoint import FixedFormat
from lepton_host.manifest import HlsInfo, Manifest, ModelInfo, TensorSpec, load_manifest
from lepton_hls import overlay
from cli_runner import run_cli

tkinter = pytest.importorskip("tkinter")
hls4ml = pytest.importorskip("hls4ml")
keras = pytest.importorskip("tensorflow.keras")

DATA = Path(__file__).parent / "data" / "vendor_reports"
N_IN, N_OUT = 16, 5
IN_FMT, OUT_FMT = "ap_fixed<16,6>", "ap_fixed<16,6>"


def write_package(root: Path) -> Path:
    """A jet-tagger-shaped package: an hls4ml Vitis io_parallel project (written, not compiled) + manifest."""
    model = keras.models.Sequential(
        [keras.layers.Input((N_IN,), name="x"), keras.layers.Dense(8, activation="relu", name="fc1"),
         keras.layers.Dense(N_OUT, name="out")]
    )  # fmt: skip
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    cfg["LayerName"]["x"]["Precision"]["result"] = IN_FMT
    for layer in ("out", "out_linear"):  # the manifest's output format must be the core's result type
        if layer in cfg["LayerName"]:
            cfg["LayerName"][layer]["Precision"]["result"] = OUT_FMT
    pkg = root / "pkg"
    hls_model = hls4ml.converters.convert_from_keras_model(
        model, hls_config=cfg, output_dir=str(pkg / "hls"), backend="Vitis", io_type="io_parallel",
        part="xc7z020clg400-1", clock_period=10,
    )  # fmt: skip
    hls_model.write()
    m = Manifest(
        model=ModelInfo(name="jetlike", source="test", sha256="0" * 64),
        inputs=[TensorSpec("x", (N_IN,), FixedFormat.parse(IN_FMT))],
        outputs=[TensorSpec("out", (N_OUT,), FixedFormat.parse(OUT_FMT))],
        hls=HlsInfo(backend="Vitis", board=None, part="xc7z020clg400-1", clock_ns=10.0, io_type="io_parallel",
                    strategy="Latency", reuse_factor=1),
    )  # fmt: skip
    # the weight files the C simulation reads are listed, as `lepton-hls build` lists them
    m.add_artifacts(pkg, [p.relative_to(pkg) for p in (pkg / "hls/firmware/weights").rglob("*") if p.is_file()])
    m.save(pkg)
    return pkg


@pytest.fixture(scope="module")
def package_template(tmp_path_factory):
    return write_package(tmp_path_factory.mktemp("overlay_pkg"))


@pytest.fixture
def package(package_template, tmp_path):
    dst = tmp_path / "pkg"
    subprocess.run(["cp", "-a", str(package_template), str(dst)], check=True)
    return dst


# ---- a Tcl interpreter that records the Vivado / Vitis HLS commands a script issues ------------------------
@dataclass
class Recorded:
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    cells: dict[str, str] = field(default_factory=dict)  # name -> vlnv
    props: dict[str, dict[str, str]] = field(default_factory=dict)  # cell -> CONFIG.* -> value
    intf: list[tuple[str, str]] = field(default_factory=list)
    nets: list[list[str]] = field(default_factory=list)
    addresses: list[dict] = field(default_factory=list)

    def named(self, cmd):
        return [args for c, args in self.calls if c == cmd]


def run_tcl(script: Path) -> Recorded:
    rec = Recorded()
    tcl = tkinter.Tcl()
    here = script.parent

    def record(name, result=""):
        def cmd(*args):
            rec.calls.append((name, args))
            return result(*args) if callable(result) else result

        tcl.createcommand(name, cmd)

    for name in ("create_project", "current_project", "update_ip_catalog", "create_bd_design", "apply_bd_automation",
                 "validate_bd_design", "save_bd_design", "generate_target", "add_files", "wait_on_run", "open_run",
                 "report_utilization", "report_timing_summary", "open_project", "set_top", "open_solution",
                 "set_part", "create_clock", "config_compile", "csynth_design", "export_design", "cd", "exit",
                 "get_runs", "make_wrapper", "current_fileset"):  # fmt: skip
        record(name)
    record("get_board_parts", lambda *a: a[-1])
    record("get_ipdefs", lambda *a: a[-1].split("=~")[-1].strip().rstrip("*") + "9.9")
    record("get_bd_cells", lambda *a: f"cell:{a[-1]}")
    record("get_bd_pins", lambda *a: f"pin:{a[-1]}")
    record("get_bd_intf_pins", lambda *a: f"intf:{a[-1]}")
    record("get_bd_addr_spaces", lambda *a: f"space:{a[-1]}")
    record("get_bd_addr_segs", lambda *a: f"seg:{a[-1]}")
    record("get_files", lambda *a: f"file:{a[-1]}")
    record("get_property", lambda *a: "100%")

    def create_bd_cell(*a):
        rec.cells[a[-1]] = a[a.index("-vlnv") + 1]
        return f"cell:{a[-1]}"

    def set_property(*a):
        if a[0] == "-dict":
            target = a[2]
            items = tcl.splitlist(a[1])
            if target.startswith("cell:"):
                rec.props.setdefault(target[5:], {}).update(dict(zip(items[::2], items[1::2])))
        elif a[-1].startswith("cell:"):
            rec.props.setdefault(a[-1][5:], {})[a[0]] = a[1]

    def connect_bd_intf_net(*a):
        rec.intf.append((a[0].removeprefix("intf:"), a[1].removeprefix("intf:")))

    def connect_bd_net(*a):
        rec.nets.append([p.removeprefix("pin:") for p in a])

    def assign_bd_address(*a):
        rec.addresses.append({"offset": int(a[a.index("-offset") + 1], 16), "range": int(a[a.index("-range") + 1], 16),
                              "space": a[a.index("-target_address_space") + 1].removeprefix("space:"),
                              "segment": a[-2].removeprefix("seg:") if a[-1] == "-force" else a[-1]})  # fmt: skip

    def launch_runs(*a):
        # What an implementation run leaves where the script looks for it.
        run = here / "vivado" / "lepton_overlay.runs" / "impl_1"
        run.mkdir(parents=True, exist_ok=True)
        (run / "lepton_wrapper.bit").write_bytes(b"bit")
        hw = here / "vivado" / "lepton_overlay.gen" / "sources_1" / "bd" / "lepton" / "hw_handoff"
        hw.mkdir(parents=True, exist_ok=True)
        (hw / "lepton.hwh").write_text("<EDKSYSTEM/>")

    for name, fn in [("create_bd_cell", create_bd_cell), ("set_property", set_property),
                     ("connect_bd_intf_net", connect_bd_intf_net), ("connect_bd_net", connect_bd_net),
                     ("assign_bd_address", assign_bd_address), ("launch_runs", launch_runs)]:  # fmt: skip
        record(name, fn)
    tcl.eval(f"source {{{script}}}")
    return rec


BOARDS = {
    # board: (PS cell, clock property, master intf, slave intf, DDR segment, DMA offset)
    "pynq-z2": ("processing_system7_0", "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ", "M_AXI_GP0", "S_AXI_HP0",
                "S_AXI_HP0/HP0_DDR_LOWOCM", 0x40400000),
    "zcu104": ("zynq_ultra_ps_e_0", "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ", "M_AXI_HPM0_FPD", "S_AXI_HP0_FPD",
               "SAXIGP2/HP0_DDR_LOW", 0xA0000000),
    "kv260": ("zynq_ultra_ps_e_0", "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ", "M_AXI_HPM0_FPD", "S_AXI_HP0_FPD",
              "SAXIGP2/HP0_DDR_LOW", 0xA0000000),
    "zcu102": ("zynq_ultra_ps_e_0", "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ", "M_AXI_HPM0_FPD", "S_AXI_HP0_FPD",
               "SAXIGP2/HP0_DDR_LOW", 0xA0000000),
}  # fmt: skip


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_block_design_has_the_blocks_connections_addresses_and_clock(package, board):
    ps, clock_prop, master, slave, ddr_seg, dma_offset = BOARDS[board]
    max_batch, clock = 1000, 125.0
    project = overlay.write_overlay_project(package, board, max_batch=max_batch, clock_mhz=clock, csim=False)
    rec = run_tcl(project.vivado_script)

    assert rec.cells["axi_dma_0"].startswith("xilinx.com:ip:axi_dma:")
    assert rec.cells["lepton_accel_0"] == "lepton:hls:lepton_accel:1.0"
    assert rec.cells[ps].split(":")[2] in ("processing_system7", "zynq_ultra_ps_e")
    board_part = next(a for a in rec.named("set_property") if a[0] == "board_part")[1]
    assert board_part == {"pynq-z2": "tul.com.tw:pynq-z2:part0:*", "zcu104": "xilinx.com:zcu104:part0:*",
                          "kv260": "xilinx.com:kv260_som:part0:*", "zcu102": "xilinx.com:zcu102:part0:*"}[board]  # fmt: skip
    assert {"ps_ctrl_interconnect", "dma_mem_interconnect", "rst_ps_pl"} <= set(rec.cells)

    # Streams through the accelerator, control from the PS, data to DDR through the high-performance port.
    intf = set(rec.intf)
    assert ("axi_dma_0/M_AXIS_MM2S", "lepton_accel_0/in_stream") in intf
    assert ("lepton_accel_0/out_stream", "axi_dma_0/S_AXIS_S2MM") in intf
    assert (f"{ps}/{master}", "ps_ctrl_interconnect/S00_AXI") in intf
    assert ("ps_ctrl_interconnect/M00_AXI", "axi_dma_0/S_AXI_LITE") in intf
    assert ("axi_dma_0/M_AXI_MM2S", "dma_mem_interconnect/S00_AXI") in intf
    assert ("axi_dma_0/M_AXI_S2MM", "dma_mem_interconnect/S01_AXI") in intf
    assert ("dma_mem_interconnect/M00_AXI", f"{ps}/{slave}") in intf

    # One clock domain: every clock pin sits on the PL clock's net, every reset on the reset block.
    clk_net = next(n for n in rec.nets if n[0].startswith(f"{ps}/") and "clk" in n[0].lower())
    clocked = {"axi_dma_0/s_axi_lite_aclk", "axi_dma_0/m_axi_mm2s_aclk", "axi_dma_0/m_axi_s2mm_aclk",
               "lepton_accel_0/ap_clk", "rst_ps_pl/slowest_sync_clk"}  # fmt: skip
    assert clocked <= set(clk_net[1:])
    assert sum(1 for n in clk_net if n.endswith("ACLK") or n.endswith("_aclk")) >= 11
    assert all(sum(p in n for n in rec.nets) == 1 for p in clk_net)  # no pin on two nets
    resets = next(n for n in rec.nets if n[0] == "rst_ps_pl/peripheral_aresetn")
    assert {"axi_dma_0/axi_resetn", "lepton_accel_0/ap_rst_n"} <= set(resets)

    # Clock frequency and the DMA configuration the host runtime relies on.
    assert float(rec.props[ps][clock_prop]) == clock
    dma = rec.props["axi_dma_0"]
    assert dma["CONFIG.c_include_sg"] == "0"
    width = int(dma["CONFIG.c_sg_length_width"])
    biggest = 4 * max(math.ceil(max_batch * N_IN / 2), math.ceil(max_batch * N_OUT / 2))  # 16-bit lanes
    assert (1 << width) - 1 >= biggest and (width == 14 or (1 << (width - 1)) - 1 < biggest)
    assert dma["CONFIG.c_m_axis_mm2s_tdata_width"] == "32" and dma["CONFIG.c_s_axis_s2mm_tdata_width"] == "32"

    # Address map: DMA registers in the PS's space, DDR in both DMA spaces; aligned and non-overlapping.
    by_seg = {(a["space"], a["segment"]): a for a in rec.addresses}
    reg = by_seg[(f"{ps}/Data", "axi_dma_0/S_AXI_LITE/Reg")]
    assert reg["offset"] == dma_offset and reg["range"] >= 0x10000 and reg["offset"] % reg["range"] == 0
    for space in ("axi_dma_0/Data_MM2S", "axi_dma_0/Data_S2MM"):
        ddr = by_seg[(space, f"{ps}/{ddr_seg}")]
        assert ddr["offset"] == 0 and ddr["range"] >= 0x20000000
        assert not (ddr["offset"] <= reg["offset"] < ddr["offset"] + ddr["range"])

    # The script ends with the bitstream and its hardware handoff side by side, as pynq's Overlay expects.
    assert (project.vivado_script.parent / "lepton.bit").read_bytes() == b"bit"
    assert (project.vivado_script.parent / "lepton.hwh").exists()
    assert rec.named("report_timing_summary") and rec.named("report_utilization")


def test_hls_script_exports_the_ip_the_block_design_instantiates(package):
    project = overlay.write_overlay_project(package, "pynq-z2", clock_mhz=100, csim=False)
    rec = run_tcl(project.hls_script)
    assert rec.named("set_top") == [("lepton_accel",)]
    assert rec.named("set_part") == [("xc7z020clg400-1",)]
    assert rec.named("create_clock")[0][:2] == ("-period", "10")
    sources = [Path(a[0]) for a in rec.named("add_files")]
    assert sources == [package.resolve() / "ip" / "lepton_accel.cpp", package.resolve() / "hls" / "firmware" / "myproject.cpp"]
    exp = rec.named("export_design")[0]
    vlnv = ":".join(exp[exp.index(k) + 1] for k in ("-vendor", "-library", "-ipname", "-version"))
    assert vlnv == "lepton:hls:lepton_accel:1.0"
    assert rec.named("csynth_design") == [()]


def test_manifest_records_the_overlay_for_the_host_runtime(package):
    overlay.write_overlay_project(package, "zcu104", max_batch=256, clock_mhz=150, csim=False)
    m = load_manifest(package)  # artifacts verified
    o = m.reports["overlay"]
    assert (o["board"], o["dma"], o["ip"], o["word_bits"], o["max_batch"], o["clock_mhz"]) == (
        "zcu104", "axi_dma_0", "lepton_accel_0", 32, 256, 150.0)  # fmt: skip
    assert o["built"] is False and o["bitstream"] is None
    assert {"overlay/hls_ip.tcl", "overlay/lepton_overlay.tcl", "ip/lepton_accel.cpp", "ip/lepton_accel.h"} <= set(m.artifacts)


def test_batch_beyond_the_dma_length_register_is_refused(package):
    with pytest.raises(overlay.OverlayError, match="26-bit length register"):
        overlay.write_overlay_project(package, "pynq-z2", max_batch=3_000_000, csim=False)


def test_unknown_board_is_refused(package):
    from lepton_hls.boards import UnknownBoardError

    with pytest.raises(UnknownBoardError, match="supported: kv260, pynq-z2, zcu102, zcu104"):
        overlay.write_overlay_project(package, "zedboard", csim=False)


def test_one_board_table_for_build_rtl_and_overlay():
    """build's part and clock, rtl's fabric and overlay's block design come from the same entry, for every board."""
    from lepton_hls import boards, build_config
    from lepton_hls.rtl import build as rtl_build  # noqa: F401  (reads the same table)

    for name in boards.names():
        b = boards.get(name)
        cfg = build_config.load_config(None, board=name)
        assert (cfg.part, cfg.clock_ns) == (b.part, b.hls_clock_ns)
        design = overlay.board_config(name)
        assert design["part"] == b.part and design["board_part"] and b.lut > 0 and b.dsp > 0


# ---- the command at the tool boundary ----------------------------------------------------------------------
def _cli(args, env):
    return run_cli(*args, env=env, timeout=300)


def _install(bin_dir: Path, names):
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = DATA / "stubs" / ("vitis_hls" if name.startswith("vitis") else name)
        (bin_dir / name).write_text(src.read_text())
        (bin_dir / name).chmod(0o755)


def _path_without_vendor_tools() -> str:
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if d and not any((Path(d) / t).exists() for t in ("vivado", "vitis_hls", "vitis-run")))  # fmt: skip


def test_overlay_without_vendor_tools_writes_the_scripts_and_names_the_missing_tool(package, tmp_path):
    _install(tmp_path / "elsewhere", ["vitis_hls", "vivado"])  # on disk, not on PATH
    proc = _cli(["overlay", str(package), "--board", "pynq-z2", "--skip-csim"],
                env={**os.environ, "PATH": _path_without_vendor_tools()})
    assert proc.returncode == 2, proc.stderr
    assert "`vitis-run` or `vitis_hls` not found on PATH" in proc.stderr and "settings64.sh" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (package / "overlay" / "lepton_overlay.tcl").is_file() and (package / "ip" / "lepton_accel.cpp").is_file()


def test_overlay_with_hls_but_no_vivado_names_vivado(package, tmp_path):
    _install(tmp_path / "bin", ["vitis_hls"])
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{_path_without_vendor_tools()}",
           "LEPTON_STUB_LOG": str(tmp_path / "calls.jsonl"), "LEPTON_STUB_SAMPLES": str(DATA)}  # fmt: skip
    proc = _cli(["overlay", str(package), "--board", "pynq-z2", "--skip-csim"], env=env)
    assert proc.returncode == 2 and "`vivado` not found on PATH" in proc.stderr
    assert not (tmp_path / "calls.jsonl").exists()  # nothing ran before every tool was found


def test_overlay_runs_both_tools_and_records_bitstream_timing_and_utilization(package, tmp_path):
    _install(tmp_path / "bin", ["vitis_hls", "vivado"])
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{_path_without_vendor_tools()}",
           "LEPTON_STUB_LOG": str(log), "LEPTON_STUB_SAMPLES": str(DATA)}  # fmt: skip
    proc = _cli(["overlay", str(package), "--board", "pynq-z2", "--max-batch", "512"], env=env)
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    out = (package / "overlay").resolve()
    assert [(c["tool"], c["argv"][-1], Path(c["cwd"]).resolve()) for c in calls] == [
        ("vitis_hls", "hls_ip.tcl", out), ("vivado", "lepton_overlay.tcl", out)]  # fmt: skip
    m = load_manifest(package)  # every artifact, the bitstream included, matches its recorded sha256
    o = m.reports["overlay"]
    bit = package / "overlay" / "lepton.bit"
    assert o["built"] is True and o["bitstream"] == "overlay/lepton.bit" and o["hwh"] == "overlay/lepton.hwh"
    assert o["bitstream_sha256"] == hashlib.sha256(bit.read_bytes()).hexdigest() == m.artifacts["overlay/lepton.bit"]
    assert o["timing"]["wns_ns"] == -0.089 and o["timing"]["met"] is False
    assert o["timing"]["source"] == "overlay/timing_summary.rpt"
    assert o["utilization"]["used"]["LUT"] == 1526
    assert "NOT MET" in proc.stdout
    # The wrapper was checked against the core in C simulation before the tools ran.
    assert o["ip_csim"]["identical"] is True and o["ip_csim"]["samples"] == 72
    assert "wrapper == core" in proc.stdout
    # Re-generating for another board drops the stale bitstream from the manifest.
    overlay.write_overlay_project(package, "kv260", csim=False)
    assert "overlay/lepton.bit" not in load_manifest(package).artifacts


def test_word_counts_match_the_wire_format(package):
    project = overlay.write_overlay_project(package, "pynq-z2", max_batch=3, csim=False)
    p = project.plan
    assert (p.in_lane_bits, p.out_lane_bits) == (16, 16)
    assert (p.in_words_max, p.out_words_max) == (24, int(np.ceil(3 * N_OUT / 2)))


@pytest.mark.slow
def test_overlay_for_a_zoo_package_built_by_lepton_hls(tmp_path):
    """The whole build side up to the tool boundary on a real package: `build`, then `overlay` (wrapper
    C simulation against the core, scripts), the package still verifying afterwards."""
    pkg = tmp_path / "jet"
    env = {**os.environ, "PATH": _path_without_vendor_tools()}
    build = _cli(["build", "jet_tagger", "--out", str(pkg)], env=env)
    assert build.returncode == 0, build.stderr[-2000:]
    proc = _cli(["overlay", str(pkg), "--board", "pynq-z2", "--scripts-only"], env=env)
    assert proc.returncode == 0, proc.stderr
    m = load_manifest(pkg)
    o = m.reports["overlay"]
    assert o["ip_csim"]["identical"] is True and o["dma"] == "axi_dma_0"
    assert (o["in_lane_bits"], o["out_lane_bits"]) == (16, 16)
    rec = run_tcl(pkg / "overlay" / "lepton_overlay.tcl")
    assert ("axi_dma_0/M_AXIS_MM2S", "lepton_accel_0/in_stream") in rec.intf
