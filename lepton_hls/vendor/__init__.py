"""Vendor tool boundary: discovery and runs of Vitis HLS / Vivado, and readers for their reports."""

from .reports import (
    CosimReport,
    CsynthReport,
    ReportError,
    TimingSummary,
    Utilization,
    parse_cosim_rpt,
    parse_csynth_rpt,
    parse_csynth_xml,
    parse_timing_summary,
    parse_utilization,
)
from .tools import ToolFailedError, ToolNotFoundError, ToolTimeoutError, find_tool, run_tool

__all__ = [
    "CosimReport",
    "CsynthReport",
    "ReportError",
    "TimingSummary",
    "ToolFailedError",
    "ToolNotFoundError",
    "ToolTimeoutError",
    "Utilization",
    "find_tool",
    "parse_cosim_rpt",
    "parse_csynth_rpt",
    "parse_csynth_xml",
    "parse_timing_summary",
    "parse_utilization",
    "run_tool",
]
