"""Traced logic -> pipelined Verilog (and VHDL) + a Verilator emulator, with da4ml's cost estimates.

Layout written under the target directory (the package's `rtl/`):
  verilog/src/*.v        the pipelined core `<name>` and its flat-port wrapper `<name>_wrapper`
  verilog/sim/lib*.so    the Verilator emulator (C ABI `inference(int32*, int32*, n, threads)`)
  vhdl/src/*.vhd         the same pipeline in VHDL (not simulated here)
  rtl.json               what the board-side `RtlEmulator` needs, and the report below
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..bounded_run import check_timeout, describe_seconds
from ..compat.da4ml import pipeline
from ..progress import Progress
from .toolchain import build_emulator, verilator_timeout_s, verilator_version
from .tracer import Traced
from .. import boards

RTL_JSON = "rtl.json"
CORE_NAME = "lepton_core"



@dataclass
class RtlReport:
    core: str
    clock_ns: float
    latency_cutoff: float
    latency_cycles: int  # clock edges from an input word on the core's port to its result on the output port
    initiation_interval: int
    latency_ns: float
    lut_estimate: int
    ff_estimate: int
    dsp_estimate: int
    board: str
    fits_board: bool
    board_resources: dict
    input_shape: list
    input_format: dict
    output_shape: list
    output_format: dict
    output_layer: str
    uncovered_layers: list
    # how raw values sit in the emulator's int32 lanes
    input_frac_bits: int
    output_kif: list
    n_inputs: int
    n_outputs: int
    core_input_bw: int  # bits per value on the flat-port wrapper's input (k + i + f of the widest input)
    core_delay: int  # clock edges from a value registered on the wrapper's input to its result
    verilator_build_s: float = 0.0
    trace_s: float = 0.0
    verilator_version: str = ""
    library: str = ""  # relative to the rtl dir
    vhdl: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _io_kifs(sol):
    from da4ml.codegen.rtl.rtl_model import get_io_kifs

    kin, kout = get_io_kifs(sol)
    return [int(np.max(a)) for a in kin], [int(np.max(a)) for a in kout]


def build_rtl(
    traced: Traced,
    out_dir: str | os.PathLike,
    clock_ns: float = 5.0,
    latency_cutoff: float | None = None,
    board: str = "pynq-z2",
    jobs: int = 1,
    vhdl: bool = True,
    compile_emulator: bool = True,
    trace_s: float = 0.0,
    progress: Progress | None = None,
    timeout_s: float | None = None,  # Verilator build limit; default: scaled to the design (verilator_timeout_s)
) -> RtlReport:
    from da4ml.codegen import VerilogModel, VHDLModel

    progress = progress or Progress(enabled=False)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cutoff = float(latency_cutoff if latency_cutoff is not None else clock_ns)
    part = boards.get(board).part
    quiet = io.StringIO()
    with progress.step(f"pipeline the core for {clock_ns:g} ns and write its Verilog"):
        with contextlib.redirect_stdout(quiet):
            model = VerilogModel(traced.comb, CORE_NAME, out / "verilog", latency_cutoff=cutoff,
                                 clock_period=clock_ns, part_name=part)
        pipe = pipeline(model)
        model.write()
    t0 = time.perf_counter()
    lib = ""
    if compile_emulator:
        limit = verilator_timeout_s(traced.comb.cost) if timeout_s is None else check_timeout(timeout_s, "timeout_s")
        # one opaque Verilator + g++ run that takes minutes on large models: say that it is still going
        step = f"build the Verilator emulator ({jobs} jobs, limit {describe_seconds(limit)})"
        with progress.step(step, heartbeat_s=30):
            lib_path = build_emulator(out / "verilog", f"{CORE_NAME}_wrapper", jobs, limit)
        lib = lib_path.relative_to(out).as_posix()
    build_s = time.perf_counter() - t0
    if vhdl:
        with progress.step("write the VHDL"), contextlib.redirect_stdout(quiet):
            VHDLModel(traced.comb, CORE_NAME, out / "vhdl", latency_cutoff=cutoff, clock_period=clock_ns,
                      part_name=part).write()
    kin, kout = _io_kifs(pipe)
    stages = len(pipe.solutions)
    b = boards.get(board)  # the fabric "fits the board" is judged against
    res = {"part": b.part, "lut": b.lut, "ff": b.ff, "dsp": b.dsp, "bram36": b.bram36}
    lut, ff = int(round(traced.comb.cost)), int(pipe.reg_bits)
    report = RtlReport(
        core=CORE_NAME,
        clock_ns=clock_ns,
        latency_cutoff=cutoff,
        latency_cycles=stages,
        initiation_interval=1,
        latency_ns=stages * clock_ns,
        lut_estimate=lut,
        ff_estimate=ff,
        dsp_estimate=0,  # da4ml builds constant multiplications from shift-adds, never from DSP slices
        board=board,
        fits_board=lut <= res["lut"] and ff <= res["ff"],
        board_resources=res,
        input_shape=list(traced.input_shape),
        input_format=traced.input_format.to_dict(),
        output_shape=list(traced.output_shape),
        output_format=traced.output_format.to_dict(),
        output_layer=traced.output_layer,
        uncovered_layers=list(traced.uncovered),
        input_frac_bits=kin[2],
        output_kif=kout,
        core_input_bw=int(sum(kin)),
        core_delay=stages + 1,
        n_inputs=int(traced.comb.shape[0]),
        n_outputs=int(traced.comb.shape[1]),
        verilator_build_s=round(build_s, 2),
        trace_s=round(trace_s, 2),
        verilator_version=verilator_version(),
        library=lib,
        vhdl=vhdl,
    )
    (out / RTL_JSON).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report
