"""A Vivado-style hardware handoff (.hwh) for a package's accelerator, generated from its manifest.

The .hwh describes the block design pynq expects beside a bitstream: a Zynq-7000 processing system, an AXI
DMA in simple (direct register) mode on GP0 at 0x40400000, and the stream accelerator fed by it. Two flavours:

- `lepton`: our accelerator, which streams packed fixed-point words (docs/package-layout.md);
- `hls4ml`: the IP hls4ml's VivadoAccelerator backend builds (`myproject_axi`, float32 words, one TLAST per
  batch) inside the `hier_0` hierarchy its design.tcl creates, so hls4ml's own `axi_stream_driver.py` finds
  `hier_0/axi_dma_0`.

Both carry the accelerator's formats and sizes as IP parameters (`C_STREAM`, `C_IN_FORMAT`, ...), so the
emulated board can serve any overlay from the .hwh alone. pynq's unmodified Zynq parser reads them
(`compat.pynq.zynq_hwh_parser`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from xml.sax.saxutils import quoteattr

from ..manifest import Manifest

DMA_BASE = 0x40400000
DMA_RANGE = 0x10000
FLAVOURS = ("lepton", "hls4ml")
PLACEHOLDER_MAGIC = b"LEPTON-HLS EMULATED BITSTREAM\n"


def _params(d: dict) -> str:
    return "\n".join(f"        <PARAMETER NAME={quoteattr(k)} VALUE={quoteattr(str(v))}/>" for k, v in d.items())


def _accelerator(manifest: Manifest, flavour: str, base: int) -> tuple[str, str]:
    """(memory-map entry, modules) of one DMA + stream accelerator pair."""
    overlay = manifest.overlay  # None until `lepton-hls overlay` planned one: the defaults below
    if flavour == "hls4ml":
        hier, dma_name = "/hier_0", "axi_dma_0"
        ip_name = f"{manifest.hls.project_name}_axi_0"
        ip_vlnv = f"xilinx.com:hls:{manifest.hls.project_name}_axi:1.0"
    else:
        hier, dma_name = "", overlay.dma if overlay else "axi_dma_0"
        ip_name, ip_vlnv = (overlay.ip if overlay else "lepton_accel_0"), "lepton-hls:hls:lepton_stream:1.0"
    dma_full = f"{hier}/{dma_name}"
    dma_inst = dma_full.strip("/").replace("/", "_")  # instance names are unique across hierarchies
    dma_params = {
        "c_include_sg": 0, "c_sg_length_width": overlay.dma_length_width if overlay else 26,
        "c_include_mm2s": 1, "c_include_s2mm": 1,
        "c_m_axi_mm2s_data_width": 32, "c_m_axi_s2mm_data_width": 32, "c_m_axis_mm2s_tdata_width": 32,
        "c_s_axis_s2mm_tdata_width": 32, "c_include_mm2s_dre": 0, "c_include_s2mm_dre": 0, "c_micro_dma": 0,
        "c_mm2s_burst_size": 16, "c_s2mm_burst_size": 16,
    }
    ip_params = {
        "C_STREAM": "float32" if flavour == "hls4ml" else "packed",
        "C_DMA": dma_full.lstrip("/"),
        "C_IN_FORMAT": str(manifest.input.format),
        "C_IN_SIZE": manifest.input.size,
        "C_IN_SHAPE": "x".join(str(d) for d in manifest.input.shape),
        "C_OUT_FORMAT": str(manifest.output.format),
        "C_OUT_SIZE": manifest.output.size,
        "C_OUT_SHAPE": "x".join(str(d) for d in manifest.output.shape),
        "C_MODEL": manifest.model.name,
        "C_MODEL_SHA256": manifest.model.sha256,
        "C_MAX_BATCH": overlay.max_batch if overlay else 0,
    }
    ip_inst = f"{hier}/{ip_name}".strip("/").replace("/", "_")
    memrange = (
        f'        <MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_BASEADDR" BASEVALUE="0x{base:08X}" HIGHNAME="C_HIGHADDR" '
        f'HIGHVALUE="0x{base + DMA_RANGE - 1:08X}" INSTANCE={quoteattr(dma_inst)} IS_DATA="TRUE" '
        'IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_GP0" MEMTYPE="REGISTER" SLAVEBUSINTERFACE="S_AXI_LITE"/>'
    )
    modules = f"""    <MODULE FULLNAME={quoteattr(dma_full)} HWVERSION="7.1" INSTANCE={quoteattr(dma_inst)} IPTYPE="PERIPHERAL" MODCLASS="PERIPHERAL" MODTYPE="axi_dma" VLNV="xilinx.com:ip:axi_dma:7.1">
      <PARAMETERS>
{_params(dma_params)}
      </PARAMETERS>
      <PORTS/>
    </MODULE>
    <MODULE FULLNAME={quoteattr(f"{hier}/{ip_name}")} INSTANCE={quoteattr(ip_inst)} IPTYPE="PERIPHERAL" MODTYPE={quoteattr(ip_vlnv.split(":")[2])} VLNV={quoteattr(ip_vlnv)}>
      <PARAMETERS>
{_params(ip_params)}
      </PARAMETERS>
      <PORTS/>
    </MODULE>
"""
    return memrange, modules


def hwh_text(manifest: Manifest, flavour: str = "lepton") -> str:
    """The .hwh of `flavour`: "lepton", "hls4ml", or "both" (the two accelerators side by side, each with its
    own DMA, so one bitstream serves both drivers at once)."""
    if flavour not in FLAVOURS + ("both",):
        raise ValueError(f"unknown overlay flavour {flavour!r}; expected one of {FLAVOURS + ('both',)}")
    flavours = FLAVOURS if flavour == "both" else (flavour,)
    blocks = [_accelerator(manifest, f, DMA_BASE + i * DMA_RANGE) for i, f in enumerate(flavours)]
    clk_mhz = 1000.0 / manifest.hls.clock_ns if manifest.hls.clock_ns else 100.0
    ps_params = {
        "PCW_FPGA_FCLK0_ENABLE": 1, "PCW_FPGA_FCLK1_ENABLE": 0, "PCW_FPGA_FCLK2_ENABLE": 0,
        "PCW_FPGA_FCLK3_ENABLE": 0, "PCW_FPGA0_PERIPHERAL_FREQMHZ": f"{clk_mhz:g}",
    }
    for i in range(4):
        ps_params[f"PCW_FCLK{i}_PERIPHERAL_DIVISOR0"] = 5 if i == 0 else 1
        ps_params[f"PCW_FCLK{i}_PERIPHERAL_DIVISOR1"] = 2 if i == 0 else 1
    part = manifest.hls.part or "xc7z020clg400-1"
    memranges = "\n".join(b[0] for b in blocks)
    modules = "".join(b[1] for b in blocks)
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="generated by lepton-hls" VIVADOVERSION="emulated">
  <SYSTEMINFO ARCH="zynq" DEVICE={quoteattr(part)} NAME={quoteattr(manifest.model.name)} PACKAGE="" SPEEDGRADE=""/>
  <EXTERNALPORTS/>
  <EXTERNALINTERFACES/>
  <MODULES>
    <MODULE FULLNAME="/processing_system7_0" INSTANCE="processing_system7_0" IPTYPE="PERIPHERAL" IS_PL="FALSE" MODTYPE="processing_system7" VLNV="xilinx.com:ip:processing_system7:5.5">
      <PARAMETERS>
{_params(ps_params)}
      </PARAMETERS>
      <MEMORYMAP>
{memranges}
      </MEMORYMAP>
      <PORTS/>
    </MODULE>
{modules}  </MODULES>
</EDKSYSTEM>
"""


def write_overlay(manifest: Manifest, out_dir, flavour: str = "lepton", name: str | None = None) -> Path:
    """Write `<name>.hwh` and a placeholder `<name>.bit` (which only the emulated board accepts) into
    `out_dir`; return the .bit path. Files are rewritten only when their content changes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or f"{manifest.model.name}_{flavour}"
    hwh = hwh_text(manifest, flavour)
    bit = PLACEHOLDER_MAGIC + hashlib.sha256(hwh.encode()).hexdigest().encode() + b"\n"
    for path, data in ((out / f"{name}.hwh", hwh.encode()), (out / f"{name}.bit", bit)):
        if not path.is_file() or path.read_bytes() != data:
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
    return out / f"{name}.bit"
