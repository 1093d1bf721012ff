"""da4ml internals the RTL flow relies on. Written against da4ml 0.5.2."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def variables(x):
    """The numpy object array of `FixedVariable`s inside a `FixedVariableArray` (same shape; the array itself,
    not a copy).

    da4ml 0.5.2: `FixedVariableArray` keeps them in `_vars`; its public methods return new arrays and
    iterating yields the elements but not the shape."""
    return x._vars


def pipeline(model):
    """The pipeline (`da4ml.trace.Pipeline`: `solutions`, one per register stage, and `reg_bits`) that a
    `VerilogModel`/`VHDLModel` built with a latency cutoff writes.

    da4ml 0.5.2: the constructor cuts the combinational logic with `to_pipeline` and keeps the result in
    `_pipe`; asking `to_pipeline` again could cut it differently from the Verilog that is written."""
    return model._pipe


@dataclass(frozen=True)
class EmulatorMake:
    """How to build the Verilator emulator library of a written `VerilogModel`, in its `sim` directory."""

    argv: list[str]
    variables: dict[str, str]  # environment variables the makefile reads
    library: str  # file name of the library it writes in `sim`
    scratch: list[str] = field(default_factory=lambda: ["obj_dir"])  # what da4ml removes after a build


def emulator_make(prefix: str, stamp: str) -> EmulatorMake:
    """da4ml's own build of the emulator of wrapper `prefix` (`<core>_wrapper`), with `stamp` in the library's
    name, as `VerilogModel._compile(openmp=False)` runs it — but to be run by the caller.

    da4ml 0.5.2: `_compile` runs `make -f build_binder.mk` in `sim` with VM_PREFIX, STAMP, EXTRA_CXXFLAGS
    ('-fopenmp' or '') and VERILATOR_FLAGS ('-Wall' for Verilog) set, the makefile writes
    `lib<VM_PREFIX>_<STAMP>.so`, and `_compile` then removes `obj_dir`. `_compile` runs make with a plain
    subprocess.run (no time limit), which is why the project runs the makefile itself."""
    return EmulatorMake(
        argv=["make", "-f", "build_binder.mk"],
        variables={"VM_PREFIX": prefix, "STAMP": stamp, "EXTRA_CXXFLAGS": "", "VERILATOR_FLAGS": "-Wall"},
        library=f"lib{prefix}_{stamp}.so",
    )


def solver_is_cached() -> bool:
    """Whether numba's on-disk cache holds da4ml's compiled matrix solver.

    da4ml 0.5.2 jits `cmvm.api.solve` with `cache=True`; numba 0.6x writes `<module>.<function>-<line>.py3x.*.nbc`
    into `__pycache__` beside the sources, or under NUMBA_CACHE_DIR when that is set."""
    import da4ml

    cache_dir = os.environ.get("NUMBA_CACHE_DIR")
    root = Path(cache_dir) if cache_dir else Path(da4ml.__file__).parent
    return any(root.rglob("*solve*.nbc"))
