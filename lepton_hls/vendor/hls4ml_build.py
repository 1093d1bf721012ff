"""Running an hls4ml project's own `build_prj.tcl` (C synthesis, C/RTL co-simulation, Vivado out-of-context
synthesis) and collecting its reports.

hls4ml's script reads its switches from `build_opt.tcl` beside it (the Vitis backend writes the same file in
`ModelGraph.build`); `vsynth` makes the script call `vivado` itself, so Vivado must be on PATH too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import reports
from .tools import find_tool, hls_command, run_tool

STEPS = ("reset", "csim", "synth", "cosim", "validation", "export", "vsynth", "fifo_opt")


@dataclass
class SynthResult:
    csynth: reports.CsynthReport | None = None
    cosim: reports.CosimReport | None = None
    vivado: reports.Utilization | None = None
    log: str = ""
    tool: str = ""
    seconds: float = 0.0
    steps: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "tool": self.tool,
            "steps": self.steps,
            "seconds": round(self.seconds, 1),
            "log": self.log,
            "csynth": self.csynth.to_dict() if self.csynth else None,
            "cosim": self.cosim.to_dict() if self.cosim else None,
            "vivado_synth": self.vivado.to_dict() if self.vivado else None,
        }


def write_build_options(hls_dir: Path, steps: dict[str, bool]) -> Path:
    body = "array set opt {\n" + "".join(f"    {k:<10} {int(bool(steps.get(k, False)))}\n" for k in STEPS) + "}\n"
    path = hls_dir / "build_opt.tcl"
    path.write_text(body)
    return path


def find_report(hls_dir: Path, project: str, sub: str, name: str) -> Path | None:
    """`name` under the solution, or its `_axi` twin (VivadoAccelerator's top is `<project>_axi`)."""
    for candidate in (name, name.replace(project, f"{project}_axi", 1)):
        hits = sorted(hls_dir.glob(f"{project}_prj/*/{sub}/{candidate}"))
        if hits:
            return hits[0]
    return None


def run_hls4ml_build(hls_dir: str | Path, project: str = "myproject", csim: bool = False, synth: bool = True,
                     cosim: bool = True, vsynth: bool = True, log_dir: str | Path | None = None,
                     progress: Callable[[str], None] | None = None) -> SynthResult:  # fmt: skip
    hls = Path(hls_dir)
    if not (hls / "build_prj.tcl").is_file():
        raise reports.ReportError(f"{hls} has no build_prj.tcl: not an hls4ml project directory")
    # hls4ml's Vitis backend script sources build_opt.tcl; the Vivado / VivadoAccelerator one reads
    # "reset=1 csim=0 ..." from its command line and was written for vivado_hls (Vitis HLS runs it too).
    reads_options_file = "build_opt.tcl" in (hls / "build_prj.tcl").read_text()
    names = ["vitis-run", "vitis_hls"] if reads_options_file else ["vivado_hls", "vitis_hls"]
    tool = find_tool(names, "run C synthesis and co-simulation (Vitis HLS)")
    if vsynth:
        find_tool(["vivado"], "run Vivado out-of-context synthesis (hls4ml's build_prj.tcl calls `vivado`)")
    steps = {"reset": True, "csim": csim, "synth": synth or cosim or vsynth, "cosim": cosim, "vsynth": vsynth}
    log = Path(log_dir or hls) / "synth.log"
    if reads_options_file:
        argv = hls_command(tool, "build_prj.tcl")
    else:
        switches = " ".join(f"{k}={int(bool(steps.get(k, False)))}" for k in STEPS)
        argv = [tool.path, "-f", "build_prj.tcl"] + (["-tclargs"] if tool.name == "vitis_hls" else []) + [switches]
    options = hls / "build_opt.tcl"
    # build_opt.tcl is part of the packaged project (and of its checksums): put the original back afterwards.
    original = options.read_bytes() if options.is_file() else None
    if reads_options_file:
        write_build_options(hls, steps)
    try:
        run = run_tool(argv, cwd=hls, log=log, progress=progress)
    finally:
        if reads_options_file and original is None:
            options.unlink(missing_ok=True)
        elif original is not None:
            options.write_bytes(original)
    result = SynthResult(log=str(log), tool=tool.name, seconds=run.seconds, steps={k: bool(v) for k, v in steps.items()})
    if steps["synth"]:
        xml = find_report(hls, project, "syn/report", f"{project}_csynth.xml")
        rpt = find_report(hls, project, "syn/report", f"{project}_csynth.rpt")
        if xml is not None:
            result.csynth = reports.parse_csynth_xml(xml)
        elif rpt is not None:
            result.csynth = reports.parse_csynth_rpt(rpt)
        else:
            raise reports.ReportError(f"C synthesis ran but no {project}_csynth.xml/.rpt was written under {hls}; see {log}")
    if cosim:
        path = find_report(hls, project, "sim/report", f"{project}_cosim.rpt")
        if path is None:
            raise reports.ReportError(f"co-simulation ran but no {project}_cosim.rpt was written under {hls}; see {log}")
        result.cosim = reports.parse_cosim_rpt(path)
    if vsynth:
        result.vivado = reports.parse_utilization(hls / "vivado_synth.rpt")
    return result
