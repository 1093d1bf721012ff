"""The PYNQ overlay of a package: Vitis HLS + Vivado scripts for a Zynq board, and (when the tools are on PATH)
the `.bit` + `.hwh` they build.

`write_overlay_project` renders `overlays/hls_ip.tcl.tmpl` and `overlays/lepton_overlay.tcl.tmpl` for one
board of `overlays/boards.json`: the Zynq PS, an AXI DMA in simple mode named `axi_dma_0` (the name the host
runtime looks up in the `.hwh`), the stream accelerator `lepton_accel_0`, one PL clock and its resets.
`build_overlay` runs the two scripts, parses the Vivado reports and records everything in the manifest.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from string import Template

from lepton_host.errors import LeptonError
from lepton_host.manifest import OVERLAY_REPORT, Manifest, OverlaySection, load_manifest, sha256_file

from . import boards as board_table
from . import ip_wrapper, resources
from .report_record import record_report
from .vendor import reports
from .vendor.tools import find_tool, hls_command, run_tool, vivado_command

OVERLAY_DIR = resources.path("overlays")

DMA_NAME = "axi_dma_0"
IP_INSTANCE = "lepton_accel_0"
BD_NAME = "lepton"
BIT_NAME = "lepton"
DEFAULT_MAX_BATCH = 4096
DMA_LENGTH_BITS_MIN, DMA_LENGTH_BITS_MAX = 14, 26  # the AXI DMA's buffer length register (c_sg_length_width)


class OverlayError(LeptonError):
    """The overlay cannot be generated for this package and board."""


class _TclTemplate(Template):
    delimiter = "%%"  # Tcl itself uses `$`


def boards() -> dict[str, dict]:
    return {name: board_config(name) for name in board_table.names()}


def board_config(name: str) -> dict:
    """The block-design fields of a board, with its part and description (one table: lepton_hls.boards)."""
    b = board_table.get(name)
    return {"description": b.description, "part": b.part, **b.overlay}


def dma_length_width(max_bytes: int) -> int:
    """Bits of the DMA's buffer length register needed to move `max_bytes` in one transfer."""
    bits = max(DMA_LENGTH_BITS_MIN, math.ceil(math.log2(max_bytes + 1)))
    if bits > DMA_LENGTH_BITS_MAX:
        raise OverlayError(
            f"a batch of {max_bytes} bytes exceeds the AXI DMA's largest simple-mode transfer "
            f"({(1 << DMA_LENGTH_BITS_MAX) - 1} bytes, 26-bit length register): lower --max-batch"
        )
    return bits


@dataclass(frozen=True, kw_only=True)
class OverlayPlan(OverlaySection):
    """What the generated scripts build; recorded in the manifest as `reports["overlay"]`. The fields the board
    reads (board, DMA and accelerator instances, batch, bitstream, ...) are the manifest's overlay section,
    inherited from it; these are the build side's own."""

    part: str
    clock_mhz: float
    accel: str
    word_bits: int
    in_lane_bits: int
    out_lane_bits: int
    in_words_max: int
    out_words_max: int
    dma_offset: str
    hls_script: str
    vivado_script: str
    ip_csim: dict | None = None  # the wrapper's C simulation check (CsimCheck.to_dict())
    timing: dict = field(default_factory=dict)
    utilization: dict = field(default_factory=dict)


def _tcl_dict(props: dict[str, str]) -> str:
    return " ".join(f"{k} {{{v}}}" for k, v in props.items())


def render_overlay_tcl(spec: ip_wrapper.WrapperSpec, board: str, clock_mhz: float, max_batch: int,
                       model_name: str, jobs: int = 2) -> tuple[str, str, OverlayPlan]:  # fmt: skip
    """The Vitis HLS script, the Vivado script and the plan they implement."""
    b = board_config(board)
    if max_batch < 1:
        raise OverlayError("--max-batch must be at least 1")
    if not 10 <= clock_mhz <= 500:
        raise OverlayError(f"PL clock {clock_mhz} MHz is outside 10..500 MHz")
    in_words, out_words = spec.in_words(max_batch), spec.out_words(max_batch)
    length_bits = dma_length_width(4 * max(in_words, spec.out_packet_words(max_batch)))  # with the check word
    ps = b["ps_cell"]
    ps_props = {b["ps_clock_property"]: f"{clock_mhz:g}", **b["ps_port_properties"]}
    dma_props = {
        "CONFIG.c_include_sg": "0",  # simple (register) mode: what pynq's DMA driver programs
        "CONFIG.c_sg_length_width": str(length_bits),
        "CONFIG.c_sg_include_stscntrl_strm": "0",
        "CONFIG.c_include_mm2s": "1",
        "CONFIG.c_include_s2mm": "1",
        "CONFIG.c_m_axi_mm2s_data_width": "32",
        "CONFIG.c_m_axis_mm2s_tdata_width": "32",
        "CONFIG.c_m_axi_s2mm_data_width": "32",
        "CONFIG.c_s_axis_s2mm_tdata_width": "32",
        "CONFIG.c_mm2s_burst_size": "16",
        "CONFIG.c_s2mm_burst_size": "16",
        "CONFIG.c_addr_width": "32",
    }
    intf = [
        (f"{DMA_NAME}/M_AXIS_MM2S", f"{IP_INSTANCE}/in_stream"),
        (f"{IP_INSTANCE}/out_stream", f"{DMA_NAME}/S_AXIS_S2MM"),
        (f"{ps}/{b['master_intf']}", "ps_ctrl_interconnect/S00_AXI"),
        ("ps_ctrl_interconnect/M00_AXI", f"{DMA_NAME}/S_AXI_LITE"),
        (f"{DMA_NAME}/M_AXI_MM2S", "dma_mem_interconnect/S00_AXI"),
        (f"{DMA_NAME}/M_AXI_S2MM", "dma_mem_interconnect/S01_AXI"),
        ("dma_mem_interconnect/M00_AXI", f"{ps}/{b['slave_intf']}"),
    ]
    clock_sinks = [
        f"{ps}/{b['master_aclk']}", f"{ps}/{b['slave_aclk']}",
        f"{DMA_NAME}/s_axi_lite_aclk", f"{DMA_NAME}/m_axi_mm2s_aclk", f"{DMA_NAME}/m_axi_s2mm_aclk",
        f"{IP_INSTANCE}/ap_clk",
        "ps_ctrl_interconnect/ACLK", "ps_ctrl_interconnect/S00_ACLK", "ps_ctrl_interconnect/M00_ACLK",
        "dma_mem_interconnect/ACLK", "dma_mem_interconnect/S00_ACLK", "dma_mem_interconnect/S01_ACLK",
        "dma_mem_interconnect/M00_ACLK",
        "rst_ps_pl/slowest_sync_clk",
    ]  # fmt: skip
    peripheral_resets = [
        f"{DMA_NAME}/axi_resetn", f"{IP_INSTANCE}/ap_rst_n",
        "ps_ctrl_interconnect/S00_ARESETN", "ps_ctrl_interconnect/M00_ARESETN",
        "dma_mem_interconnect/S00_ARESETN", "dma_mem_interconnect/S01_ARESETN", "dma_mem_interconnect/M00_ARESETN",
    ]  # fmt: skip
    interconnect_resets = ["ps_ctrl_interconnect/ARESETN", "dma_mem_interconnect/ARESETN"]

    def pins(names):
        return " ".join(f"[get_bd_pins {n}]" for n in names)

    intf_lines = "\n".join(
        f"connect_bd_intf_net [get_bd_intf_pins {a}] [get_bd_intf_pins {z}]" for a, z in intf
    )
    net_lines = "\n".join(
        [
            f"connect_bd_net [get_bd_pins {ps}/{b['pl_clk']}] {pins(clock_sinks)}",
            f"connect_bd_net [get_bd_pins {ps}/{b['pl_resetn']}] [get_bd_pins rst_ps_pl/ext_reset_in]",
            f"connect_bd_net [get_bd_pins rst_ps_pl/peripheral_aresetn] {pins(peripheral_resets)}",
            f"connect_bd_net [get_bd_pins rst_ps_pl/interconnect_aresetn] {pins(interconnect_resets)}",
        ]
    )
    addr_lines = "\n".join(
        [
            f"assign_bd_address -offset {b['dma_offset']} -range {b['dma_range']} "
            f"-target_address_space [get_bd_addr_spaces {ps}/{b['ps_addr_space']}] "
            f"[get_bd_addr_segs {DMA_NAME}/S_AXI_LITE/Reg] -force",
            f"assign_bd_address -offset {b['ddr_offset']} -range {b['ddr_range']} "
            f"-target_address_space [get_bd_addr_spaces {DMA_NAME}/Data_MM2S] "
            f"[get_bd_addr_segs {ps}/{b['ddr_segment']}] -force",
            f"assign_bd_address -offset {b['ddr_offset']} -range {b['ddr_range']} "
            f"-target_address_space [get_bd_addr_spaces {DMA_NAME}/Data_S2MM] "
            f"[get_bd_addr_segs {ps}/{b['ddr_segment']}] -force",
        ]
    )
    clock_ns = 1000.0 / clock_mhz
    values = {
        "model": model_name,
        "board": board,
        "board_description": b["description"],
        "board_part": b["board_part"],
        "part": b["part"],
        "accel": spec.accel,
        "core": spec.core,
        "clock_ns": f"{clock_ns:.4g}",
        "clock_mhz": f"{clock_mhz:g}",
        "jobs": str(jobs),
        "bd_name": BD_NAME,
        "bit_name": BIT_NAME,
        "ps_ip": b["ps_ip"],
        "ps_cell": ps,
        "ps_rule": b["ps_rule"],
        "ps_rule_config": b["ps_rule_config"],
        "ps_properties": _tcl_dict(ps_props),
        "dma_properties": _tcl_dict(dma_props),
        "master_intf": b["master_intf"],
        "slave_intf": b["slave_intf"],
        "pl_clk": b["pl_clk"],
        "intf_connections": intf_lines,
        "net_connections": net_lines,
        "address_assignments": addr_lines,
    }
    hls_tcl = _TclTemplate((OVERLAY_DIR / "hls_ip.tcl.tmpl").read_text()).substitute(values)
    vivado_tcl = _TclTemplate((OVERLAY_DIR / "lepton_overlay.tcl.tmpl").read_text()).substitute(values)
    plan = OverlayPlan(
        board=board,
        part=b["part"],
        clock_mhz=float(clock_mhz),
        max_batch=max_batch,
        dma=DMA_NAME,
        ip=IP_INSTANCE,
        accel=spec.accel,
        word_bits=ip_wrapper.WORD_BITS,
        in_lane_bits=spec.in_lane,
        out_lane_bits=spec.out_lane,
        in_words_max=in_words,
        out_words_max=out_words,
        dma_length_width=length_bits,
        dma_offset=b["dma_offset"],
        hls_script="overlay/hls_ip.tcl",
        vivado_script="overlay/lepton_overlay.tcl",
    )
    return hls_tcl, vivado_tcl, plan


@dataclass
class OverlayProject:
    package: Path
    manifest: Manifest
    plan: OverlayPlan
    ip: ip_wrapper.IpSources
    hls_script: Path
    vivado_script: Path


def write_overlay_project(package_dir: str | Path, board: str, max_batch: int = DEFAULT_MAX_BATCH,
                          clock_mhz: float | None = None, jobs: int = 2, csim: bool = True) -> OverlayProject:  # fmt: skip
    """Generate `<package>/ip/` and `<package>/overlay/*.tcl` and record them in the manifest. With `csim`,
    first check the wrapper in C simulation against the core (g++, a few seconds)."""
    pkg = Path(package_dir)
    manifest = load_manifest(pkg)
    hls_dir = pkg / "hls"
    spec = ip_wrapper.wrapper_spec(manifest, hls_dir)
    if clock_mhz is None:
        clock_mhz = round(1000.0 / manifest.hls.clock_ns, 3) if manifest.hls.clock_ns else board_config(board)["default_clock_mhz"]
    ip = ip_wrapper.generate_ip(spec, pkg / "ip")
    hls_tcl, vivado_tcl, plan = render_overlay_tcl(spec, board, clock_mhz, max_batch, manifest.model.name, jobs)
    if csim:
        with tempfile.TemporaryDirectory(prefix="lepton_ipcsim_") as work:
            ip_csim = ip_wrapper.check_csim(spec, ip, hls_dir, work, project_name=manifest.hls.project_name).to_dict()
        plan = replace(plan, ip_csim=ip_csim)
    out = pkg / "overlay"
    out.mkdir(exist_ok=True)
    hls_script, vivado_script = out / "hls_ip.tcl", out / "lepton_overlay.tcl"
    hls_script.write_text(hls_tcl)
    vivado_script.write_text(vivado_tcl)
    # A stale bitstream from another board or batch size must not stay listed (or, unlisted, stay at all)
    # next to new scripts.
    record_report(pkg, manifest, OVERLAY_REPORT, plan.to_dict(), files=[*ip.files, hls_script, vivado_script],
                  replace_prefix="overlay/")  # fmt: skip
    return OverlayProject(pkg, manifest, plan, ip, hls_script, vivado_script)


def build_overlay(project: OverlayProject, progress: Callable[[str], None] | None = None) -> OverlayPlan:
    """Run Vitis HLS then Vivado on the generated scripts; parse their reports into the manifest."""
    hls_tool = find_tool(["vitis-run", "vitis_hls"], "synthesize the accelerator IP (Vitis HLS)")
    vivado = find_tool(["vivado"], "build the overlay bitstream (Vivado)")
    out = project.vivado_script.parent
    run_tool(hls_command(hls_tool, project.hls_script.name), cwd=out, log=out / "hls_ip.log", progress=progress)
    run_tool(vivado_command(vivado, project.vivado_script.name), cwd=out, log=out / "vivado.log", progress=progress)
    bit, hwh = out / f"{BIT_NAME}.bit", out / f"{BIT_NAME}.hwh"
    for f in (bit, hwh):
        if not f.is_file():
            raise OverlayError(f"Vivado finished but {f} was not written; see {out / 'vivado.log'}")
    plan = project.plan = replace(
        project.plan,
        timing=reports.parse_timing_summary(out / "timing_summary.rpt").to_dict() | {"source": "overlay/timing_summary.rpt"},
        utilization=reports.parse_utilization(out / "utilization.rpt").to_dict() | {"source": "overlay/utilization.rpt"},
        bitstream=f"overlay/{bit.name}",
        hwh=f"overlay/{hwh.name}",
        bitstream_sha256=sha256_file(bit),
        built=True,
    )  # fmt: skip
    manifest = load_manifest(project.package, verify=False)
    record_report(project.package, manifest, OVERLAY_REPORT, plan.to_dict(),
                  files=[bit, hwh, out / "timing_summary.rpt", out / "utilization.rpt"])  # fmt: skip
    return plan
