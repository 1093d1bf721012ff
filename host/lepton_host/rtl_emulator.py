"""The Verilator model of an overlay package's RTL core, run with numpy and ctypes alone.

`lepton-hls rtl` writes `rtl/rtl.json` and a Verilator-built library whose C entry point
`inference(int32 *in, int32 *out, size_t n, size_t threads)` clocks the pipelined core once per sample.
`RtlEmulator.predict_raw` offers the same raw-integer interface as the C simulation and the fast engine, so
the emulated board can run on the hardware model instead.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
from pathlib import Path

import numpy as np

from .emulator_base import ENGINE_DIR, Emulator, PortSpec, read_ports
from .errors import EmulationError
from .fixedpoint import FixedFormat

RTL_DIR = Path("rtl")
RTL_JSON = "rtl.json"
# Verilator runs the core's `$readmemh("table_*.mem")` (softmax lookup tables) when each batch constructs the
# model, relative to the working directory; the directory is process-wide, so batches that need it take turns.
_CWD_LOCK = threading.Lock()


class RtlEmulator(Emulator):
    """Cycle-accurate emulation of the da4ml pipeline (bit-identical to the C simulation where it covers
    the model; `uncovered` names the trailing layers it leaves out, e.g. a softmax).

    With `tail="engine"` the uncovered layers run on the package's integer engine after the RTL, so the
    object answers for the whole package (what the emulated board needs); with `tail=None` it returns the
    RTL's own output layer."""

    name = "rtl"

    def __init__(self, package_dir: str | os.PathLike, rtl_dir: str | os.PathLike | None = None,
                 tail: str | None = None):
        root = Path(package_dir)
        self.rtl_dir = Path(rtl_dir) if rtl_dir is not None else root / RTL_DIR
        info_path = self.rtl_dir / RTL_JSON
        if not info_path.is_file():
            raise EmulationError(f"{self.rtl_dir}: no {RTL_JSON}; run `lepton-hls rtl {root}` first")
        info = json.loads(info_path.read_text())
        self.info = info
        if not info.get("library"):
            raise EmulationError(f"{info_path}: the RTL was written without a Verilator emulator; rerun `lepton-hls rtl`")
        self.input = PortSpec("input", tuple(info["input_shape"]), FixedFormat.from_dict(info["input_format"]))
        self.output = PortSpec(info["output_layer"], tuple(info["output_shape"]), FixedFormat.from_dict(info["output_format"]))
        self.uncovered = list(info.get("uncovered_layers", []))
        self.latency_cycles = int(info["latency_cycles"])
        lib_path = self.rtl_dir / info["library"]
        if not lib_path.is_file():
            raise EmulationError(f"{lib_path} is missing; rerun `lepton-hls rtl` to rebuild the Verilator emulator")
        try:
            self._lib = ctypes.CDLL(str(lib_path.resolve()), mode=os.RTLD_LOCAL)
            fn = self._lib.inference
        except (OSError, AttributeError) as e:
            raise EmulationError(f"{lib_path}: cannot load the Verilator emulator ({e})") from None
        i32 = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
        fn.argtypes = [i32, i32, ctypes.c_size_t, ctypes.c_size_t]
        fn.restype = None
        self._fn = fn
        self._n_in, self._n_out = int(info["n_inputs"]), int(info["n_outputs"])
        self._in_shift = int(info["input_frac_bits"]) - self.input.format.frac
        k, i, f = (int(v) for v in info["output_kif"])
        self._out_width, self._out_signed, self._out_shift = k + i + f, bool(k), self.output.format.frac - f
        memdir = lib_path.parent.parent / "src" / "memfiles"
        self._memdir = memdir if any(memdir.glob("*.mem")) else None
        self._tail = None
        if tail == "engine" and self.uncovered:
            self._tail = _engine_tail(root, self.output.name)
            self.rtl_output = self.output
            self.output = read_ports(root)[1]
        elif tail not in (None, "engine"):
            raise EmulationError(f"unknown tail {tail!r}; use None or 'engine'")

    def predict_raw(self, raw_in) -> np.ndarray:
        raw = np.asarray(raw_in, dtype=np.int64)
        n = raw.size // self._n_in if self._n_in else 0
        if raw.size != n * self._n_in or n == 0:
            raise EmulationError(f"rtl emulator: {raw.size} raw values are not a whole batch of {self._n_in}-value samples")
        flat = raw.reshape(n, self._n_in)
        flat = flat << self._in_shift if self._in_shift >= 0 else flat >> -self._in_shift
        inp = np.ascontiguousarray(flat, dtype=np.int32).ravel()
        out = np.zeros(n * self._n_out, dtype=np.int32)
        if self._memdir is None:
            self._fn(inp, out, n, 1)
        else:
            with _CWD_LOCK:
                cwd = os.getcwd()
                os.chdir(self._memdir)
                try:
                    self._fn(inp, out, n, 1)
                finally:
                    os.chdir(cwd)
        v = out.astype(np.int64)
        w = self._out_width
        if w < 64:
            v &= (np.int64(1) << w) - 1
            if self._out_signed:
                v = np.where(v >= (np.int64(1) << (w - 1)), v - (np.int64(1) << w), v)
        v = v << self._out_shift if self._out_shift >= 0 else v >> -self._out_shift
        if self._tail is not None:
            return self._tail.run_raw(v.reshape((n,) + self.rtl_output.shape), after=self.rtl_output.name)
        return v.reshape((n,) + self.output.shape)


def _engine_tail(package_dir: Path, start: str):
    """The package's engine, checked to continue from the RTL's output layer `start`."""
    from .engine import Engine

    engine = Engine.load(Path(package_dir) / ENGINE_DIR)
    try:
        engine.tail_start(start)
    except EmulationError as e:
        raise EmulationError(f"{package_dir}: the RTL ends at layer {start!r}, where the engine cannot take over: {e}") from None
    return engine


def load_rtl_emulator(package_dir: str | os.PathLike) -> RtlEmulator:
    """The whole package's arithmetic with the RTL where it reaches: what the emulated board attaches."""
    return RtlEmulator(package_dir, tail="engine")
