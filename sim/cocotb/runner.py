"""Build and run the cocotb co-simulation of the RTL stream wrapper (ip/rtl/lepton_axis.v) around a package's
da4ml core on Verilator, with reference outputs from the package's C simulation.

    python sim/cocotb/runner.py PACKAGE_DIR [--samples 300] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WRAPPER = REPO / "ip" / "rtl" / "lepton_axis.v"


def axis_parameters(rtl_info: dict) -> dict:
    """lepton_axis parameters for a core described by the package's `rtl/rtl.json`."""
    from lepton_host.fixedpoint import FixedFormat
    from lepton_host import packing
    from lepton_host.packing import lane_bits

    fin, fout = FixedFormat.from_dict(rtl_info["input_format"]), FixedFormat.from_dict(rtl_info["output_format"])
    k_in_bw = rtl_info.get("core_input_bw")
    ok, oi, of = rtl_info["output_kif"]
    depth = rtl_info["latency_cycles"] + 4
    return {
        "N_IN": rtl_info["n_inputs"],
        "IN_WIDTH": fin.width,
        "IN_SIGNED": int(fin.signed),
        "IN_LANE": lane_bits(fin),
        "IN_BW": k_in_bw,
        "IN_SHIFT": rtl_info["input_frac_bits"] - fin.frac,
        "N_OUT": rtl_info["n_outputs"],
        "OUT_WIDTH": fout.width,
        "OUT_SIGNED": int(fout.signed),
        "OUT_LANE": lane_bits(fout),
        "OUT_BW": ok + oi + of,
        "CORE_OUT_SIGNED": int(ok),
        "OUT_SHIFT": fout.frac - of,
        "CORE_DELAY": rtl_info["core_delay"],
        "FIFO_LOG2": max(2, int(np.ceil(np.log2(depth)))),
        # the check word's CRC, from the one definition of the wire format
        "CRC_POLY": f"32'h{packing.CRC32_POLY_REFLECTED:08X}",
        "CRC_INIT": f"32'h{packing.CRC32_INIT:08X}",
        "CRC_XOROUT": f"32'h{packing.CRC32_XOROUT:08X}",
    }


def rtl_sources(rtl_dir: Path) -> list[Path]:
    src = rtl_dir / "verilog" / "src"
    return [WRAPPER, *sorted(src.glob("*.v")), *sorted((src / "static").glob("*.v"))]


def run_cosim(package_dir, samples: int = 300, seed: int = 1, idle_p: float = 0.3, stall_p: float = 0.3,
              build_dir=None, jobs: int = 1, timeout_s: float | None = None) -> dict:
    """Stream `samples` inputs in random-size batches through the wrapper; return the bench's result.

    Each Verilator, make and simulation run is stopped after `timeout_s` (default: scaled to the core)."""
    from lepton_hls.rtl.package import check_inputs, reference_raw
    from lepton_hls.rtl.toolchain import bounded_verilator_runner, verilator_env, verilator_timeout_s
    from lepton_host.rtl_emulator import RtlEmulator

    root = Path(package_dir)
    emu = RtlEmulator(root)
    info = emu.info
    raw = check_inputs(emu.input.format, emu.input.shape, samples, seed)
    expected = reference_raw(root, emu, raw).reshape(samples, -1)
    rng = np.random.default_rng(seed)
    sizes, left = [], samples
    while left:
        s = int(min(left, rng.integers(1, 40)))
        sizes.append(s)
        left -= s
    meta = {
        "input_format": info["input_format"], "output_format": info["output_format"], "batches": sizes,
        "seed": seed, "idle_p": idle_p, "stall_p": stall_p,
    }
    build_dir = Path(build_dir) if build_dir else root / "rtl" / "cocotb_build"
    env = verilator_env(jobs)
    os.environ.update({k: env[k] for k in ("VERILATOR_ROOT", "PATH", "MAKEFLAGS")})
    with tempfile.TemporaryDirectory(prefix="lepton-cosim-") as tmp:
        case, result = Path(tmp) / "case.npz", Path(tmp) / "result.json"
        np.savez(case, inputs=raw.reshape(samples, -1), expected=expected, meta=np.array(json.dumps(meta)))
        limit = verilator_timeout_s(info.get("lut_estimate", 0)) if timeout_s is None else timeout_s
        runner = bounded_verilator_runner(limit, f"cocotb co-simulation of {root}")
        runner.build(
            sources=rtl_sources(root / "rtl"),
            includes=[root / "rtl" / "verilog" / "src"],
            hdl_toplevel="lepton_axis",
            parameters=axis_parameters(info),
            build_dir=build_dir,
            build_args=["-Wno-fatal", "-Wno-lint", "-Wno-style", "-j", str(jobs)],
            timescale=("1ns", "1ps"),
        )
        # The core's lookup tables are read with $readmemh relative to the simulation's working directory.
        build_dir.mkdir(parents=True, exist_ok=True)
        for mem in (root / "rtl" / "verilog" / "src" / "memfiles").glob("*.mem"):
            shutil.copyfile(mem, build_dir / mem.name)
        pypath = os.pathsep.join([str(HERE), str(REPO / "host"), str(REPO), os.environ.get("PYTHONPATH", "")])
        runner.test(
            hdl_toplevel="lepton_axis",
            test_module="test_lepton_axis",
            test_dir=build_dir,
            build_dir=build_dir,
            extra_env={"LEPTON_COSIM_CASE": str(case), "LEPTON_COSIM_RESULT": str(result), "PYTHONPATH": pypath},
            results_xml=str(Path(tmp) / "results.xml"),
        )
        if not result.is_file():
            raise AssertionError(f"co-simulation of {root} failed; see the cocotb log above")
        return json.loads(result.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    print(json.dumps(run_cosim(a.package, a.samples, a.seed), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
