"""Readers for the vendor tools' report files, in the formats the tools write them.

- Vitis/Vivado HLS C synthesis: `<top>_csynth.xml` (preferred: structured) and `<top>_csynth.rpt` (text);
- Vitis/Vivado HLS C/RTL co-simulation: `<top>_cosim.rpt`;
- Vivado: `report_utilization` and `report_timing_summary` text output.

Each reader returns a dataclass with `to_dict()` for the manifest's `reports`; a file that is not the report
it claims to be raises `ReportError` naming the file and what was missing.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lepton_host.errors import LeptonError


class ReportError(LeptonError):
    """A vendor report file is missing or not in the expected format."""


def _read(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise ReportError(f"report {p} not found (did the tool run to the end? check its log)")
    return p.read_text(errors="replace")


def _num(text: str | None) -> float | None:
    if text is None:
        return None
    m = re.search(r"-?\d+(?:\.\d+)?", text)
    return float(m.group()) if m else None


def _int(text: str | None) -> int | None:
    v = _num(text)
    return None if v is None else int(v)


# Vitis HLS names the DSP column DSP (2021+) where Vivado HLS wrote DSP48E; BRAM is counted in 18K blocks.
_RESOURCE_ALIASES = {"DSP48E": "DSP", "DSP48E1": "DSP", "DSP48E2": "DSP", "DSP": "DSP", "BRAM_18K": "BRAM_18K",
                     "FF": "FF", "LUT": "LUT", "URAM": "URAM"}  # fmt: skip


@dataclass
class CsynthReport:
    """HLS C synthesis estimates for the top function."""

    top: str
    part: str
    tool_version: str
    target_clock_ns: float | None
    estimated_clock_ns: float | None
    latency_min: int | None  # cycles
    latency_max: int | None
    interval_min: int | None  # initiation interval, cycles
    interval_max: int | None
    pipeline_type: str = ""
    resources: dict[str, int] = field(default_factory=dict)
    available: dict[str, int] = field(default_factory=dict)
    source: str = ""

    @property
    def fmax_mhz(self) -> float | None:
        return 1000.0 / self.estimated_clock_ns if self.estimated_clock_ns else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fmax_mhz"] = None if self.fmax_mhz is None else round(self.fmax_mhz, 3)
        return d


def parse_csynth_xml(path: str | Path) -> CsynthReport:
    text = _read(path)
    # Some versions declare a default namespace; drop it so the plain tag paths work.
    text = re.sub(r'\sxmlns="[^"]+"', "", text, count=1)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ReportError(f"{path} is not valid XML: {e}") from None
    if root.find("PerformanceEstimates") is None or root.find("AreaEstimates") is None:
        raise ReportError(f"{path} is not an HLS csynth.xml (no PerformanceEstimates/AreaEstimates)")

    def get(p: str) -> str | None:
        el = root.find(p)
        return el.text.strip() if el is not None and el.text is not None else None

    lat = "PerformanceEstimates/SummaryOfOverallLatency/"

    def resources(section: str) -> dict[str, int]:
        out = {}
        el = root.find(f"AreaEstimates/{section}")
        for child in list(el) if el is not None else []:
            key = _RESOURCE_ALIASES.get(child.tag)
            if key and child.text and child.text.strip().lstrip("-").isdigit():
                out[key] = int(child.text.strip())
        return out

    return CsynthReport(
        top=get("UserAssignments/TopModelName") or "",
        part=get("UserAssignments/Part") or "",
        tool_version=get("ReportVersion/Version") or "",
        target_clock_ns=_num(get("UserAssignments/TargetClockPeriod")),
        estimated_clock_ns=_num(get("PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod")),
        latency_min=_int(get(lat + "Best-caseLatency")),
        latency_max=_int(get(lat + "Worst-caseLatency")),
        interval_min=_int(get(lat + "Interval-min")),
        interval_max=_int(get(lat + "Interval-max")),
        pipeline_type=get("PerformanceEstimates/PipelineType") or "",
        resources=resources("Resources"),
        available=resources("AvailableResources"),
        source=str(path),
    )


def _table_rows(lines: list[str]) -> list[list[str]]:
    """Cells of `|a|b|c|` rows (separator rows `+---+` skipped)."""
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines if ln.strip().startswith("|")]


def _section(text: str, title: str, next_title: str = "== ") -> list[str]:
    start = text.find(title)
    if start < 0:
        return []
    rest = text[start + len(title) :]
    end = rest.find(next_title)
    return (rest if end < 0 else rest[:end]).splitlines()


def parse_csynth_rpt(path: str | Path) -> CsynthReport:
    text = _read(path)
    m_top = re.search(r"== (?:Vivado|Vitis) HLS Report for '([^']+)'", text)
    if not m_top:
        raise ReportError(f"{path} is not an HLS synthesis report (no \"HLS Report for '...'\" header)")
    version = re.search(r"\* Version:\s*(\S+)", text)
    part = re.search(r"\* Target device:\s*(\S+)", text)
    clock = re.search(r"\|\s*ap_clk\s*\|\s*([\d.]+)\s*ns\s*\|\s*([\d.]+)\s*ns\s*\|", text)

    lat_min = lat_max = ii_min = ii_max = None
    ptype = ""
    perf = _section(text, "+ Latency:", "+ Detail:")
    for cells in _table_rows(perf):
        # The first row that starts with a number: min, max cycles, absolute min, max, II min, max, type.
        if cells and re.fullmatch(r"\d+", cells[0]):
            lat_min, lat_max = int(cells[0]), int(cells[1])
            ii_min, ii_max = _int(cells[4]), _int(cells[5])
            ptype = cells[6] if len(cells) > 6 else ""
            break

    resources: dict[str, int] = {}
    available: dict[str, int] = {}
    util = _section(text, "== Utilization Estimates", "+ Detail:")
    rows = _table_rows(util)
    header = next((r for r in rows if r and r[0] == "Name"), None)
    if header:
        keys = [_RESOURCE_ALIASES.get(h) for h in header]
        for r in rows:
            target = {"Total": resources, "Available": available}.get(r[0])
            if target is None:
                continue
            for k, v in zip(keys, r):
                if k and re.fullmatch(r"\d+", v):
                    target[k] = int(v)
    if lat_min is None and not resources:
        raise ReportError(f"{path}: found neither the latency summary nor the utilization estimates")
    return CsynthReport(
        top=m_top.group(1),
        part=part.group(1) if part else "",
        tool_version=version.group(1) if version else "",
        target_clock_ns=float(clock.group(1)) if clock else None,
        estimated_clock_ns=float(clock.group(2)) if clock else None,
        latency_min=lat_min,
        latency_max=lat_max,
        interval_min=ii_min,
        interval_max=ii_max,
        pipeline_type=ptype,
        resources=resources,
        available=available,
        source=str(path),
    )


@dataclass
class CosimReport:
    rtl: str
    status: str  # Pass | Fail
    latency_min: int | None
    latency_avg: int | None
    latency_max: int | None
    interval_min: int | None
    interval_avg: int | None
    interval_max: int | None
    source: str = ""

    @property
    def passed(self) -> bool:
        return self.status.lower() == "pass"

    def to_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}


def parse_cosim_rpt(path: str | Path) -> CosimReport:
    """The first RTL language row that was simulated (Status other than NA)."""
    text = _read(path)
    for cells in _table_rows(text.splitlines()):
        if len(cells) >= 8 and cells[0] in ("Verilog", "VHDL") and cells[1] != "NA":
            return CosimReport(
                rtl=cells[0], status=cells[1],
                latency_min=_int(cells[2]), latency_avg=_int(cells[3]), latency_max=_int(cells[4]),
                interval_min=_int(cells[5]), interval_avg=_int(cells[6]), interval_max=_int(cells[7]),
                source=str(path),
            )  # fmt: skip
    raise ReportError(f"{path}: no simulated Verilog/VHDL row in the co-simulation report (did cosim run?)")


# report_utilization site types -> the names used in the manifest. 7-series says "Slice", UltraScale "CLB".
_UTIL_SITES = {
    "Slice LUTs": "LUT", "CLB LUTs": "LUT",
    "Slice Registers": "FF", "CLB Registers": "FF",
    "Block RAM Tile": "BRAM_TILE",
    "DSPs": "DSP",
    "URAM": "URAM",
    "Bonded IOB": "IOB",
}  # fmt: skip


@dataclass
class Utilization:
    design: str
    device: str
    tool_version: str
    state: str  # Synthesized | Placed | Routed
    used: dict[str, float] = field(default_factory=dict)
    available: dict[str, float] = field(default_factory=dict)
    percent: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _header_field(text: str, name: str) -> str:
    m = re.search(rf"^\|\s*{re.escape(name)}\s*:\s*(.*?)\s*$", text, re.M)
    return m.group(1) if m else ""


def parse_utilization(path: str | Path) -> Utilization:
    text = _read(path)
    if "report_utilization" not in text and "Utilization Design Information" not in text:
        raise ReportError(f"{path} is not a Vivado report_utilization output")
    util = Utilization(
        design=_header_field(text, "Design"),
        device=_header_field(text, "Device"),
        tool_version=_header_field(text, "Tool Version"),
        state=_header_field(text, "Design State"),
        source=str(path),
    )
    header: list[str] | None = None
    for cells in _table_rows(text.splitlines()):
        if cells and cells[0] == "Site Type":
            header = cells
            continue
        if header is None or not cells:
            continue
        site = cells[0].rstrip("*").strip()
        key = _UTIL_SITES.get(site)
        if key is None or key in util.used:
            continue
        row = dict(zip(header, cells))
        used, avail, pct = _num(row.get("Used")), _num(row.get("Available")), _num(row.get("Util%"))
        if used is not None:
            util.used[key] = used
        if avail is not None:
            util.available[key] = avail
        if pct is not None:
            util.percent[key] = pct
    if "LUT" not in util.used:
        raise ReportError(f"{path}: no Slice/CLB LUTs row in the utilization tables")
    return util


@dataclass
class TimingSummary:
    design: str
    device: str
    tool_version: str
    wns_ns: float | None  # worst negative (setup) slack
    tns_ns: float | None
    failing_setup_endpoints: int | None
    whs_ns: float | None  # worst hold slack
    ths_ns: float | None
    failing_hold_endpoints: int | None
    wpws_ns: float | None  # worst pulse-width slack
    met: bool
    clocks: list[dict] = field(default_factory=list)  # name, period_ns, frequency_mhz
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def parse_timing_summary(path: str | Path) -> TimingSummary:
    text = _read(path)
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("| Design Timing Summary"))
    except StopIteration:
        raise ReportError(f"{path} is not a Vivado report_timing_summary output (no Design Timing Summary)") from None
    values: dict[str, str] = {}
    for i in range(start, min(start + 20, len(lines) - 2)):
        if "WNS(ns)" in lines[i]:
            names = re.split(r"\s{2,}", lines[i].strip())
            vals = lines[i + 2].split()
            if len(vals) == len(names):
                values = dict(zip(names, vals))
            break
    if not values:
        raise ReportError(f"{path}: the Design Timing Summary table has no values (was the design routed?)")

    def f(name: str) -> float | None:
        v = values.get(name)
        return None if v in (None, "NA", "inf") else float(v)

    def n(name: str) -> int | None:
        v = f(name)
        return None if v is None else int(v)

    clocks = []
    try:
        cs = next(i for i, ln in enumerate(lines) if ln.strip().startswith("| Clock Summary"))
        for ln in lines[cs + 4 : cs + 40]:
            m = re.match(r"^\s*(\S+)\s+\{[^}]*\}\s+([\d.]+)\s+([\d.]+)", ln)
            if m:
                clocks.append({"name": m.group(1), "period_ns": float(m.group(2)), "frequency_mhz": float(m.group(3))})
            elif clocks and not ln.strip():
                break
    except StopIteration:
        pass
    met_line = "All user specified timing constraints are met." in text
    wns, whs = f("WNS(ns)"), f("WHS(ns)")
    met = met_line or (wns is not None and wns >= 0 and (whs is None or whs >= 0))
    if "Timing constraints are not met." in text:
        met = False
    return TimingSummary(
        design=_header_field(text, "Design"),
        device=_header_field(text, "Device"),
        tool_version=_header_field(text, "Tool Version"),
        wns_ns=wns,
        tns_ns=f("TNS(ns)"),
        failing_setup_endpoints=n("TNS Failing Endpoints"),
        whs_ns=whs,
        ths_ns=f("THS(ns)"),
        failing_hold_endpoints=n("THS Failing Endpoints"),
        wpws_ns=f("WPWS(ns)"),
        met=met,
        clocks=clocks,
        source=str(path),
    )
