"""Bit-exact emulators of an overlay package's accelerator, with numpy alone.

Two implementations behind one interface, both loaded from a package directory:

- `CsimEmulator` calls hls4ml's compiled C simulation (`emulation/csim.so`) through ctypes, one sample per
  call: the reference, as slow as hls4ml's own `predict`.
- `FastEmulator` runs the integer engine (`engine/graph.json`, `engine/weights.npz`) on whole batches; it is
  checked bit for bit against the C simulation.

`predict(x)` takes model-domain float inputs (already preprocessed) and returns float64 outputs;
`predict_raw(raw)` takes raw integers in the input's fixed-point format and returns raw integers in the
output's format, which is what the accelerator sees on its AXI streams.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from .emulator_base import (  # noqa: F401  (re-exported: the emulators' shared names)
    CSIM_FILES,
    CSIM_LIB,
    ENGINE_DIR,
    ENGINES,
    GRAPH_NAME,
    Emulator,
    PortSpec,
    read_ports,
)
from .errors import EmulationError, LeptonError
from .manifest import load_manifest


class CsimEmulator(Emulator):
    """hls4ml's C simulation library, one sample per call, through its `<project>_double` bridge."""

    name = "csim"

    def __init__(self, package_dir: str | os.PathLike, project_name: str | None = None):
        root = Path(package_dir)
        self.input, self.output = read_ports(root, verify=CSIM_FILES)
        lib_path = root / CSIM_LIB
        if not lib_path.is_file():
            raise EmulationError(f"{root}: {CSIM_LIB} is missing; rebuild the package with `lepton-hls build`")
        project_name = project_name or _project_name(root)
        try:
            # RTLD_LOCAL keeps two packages' identically named symbols apart.
            self._lib = ctypes.CDLL(str(lib_path.resolve()), mode=os.RTLD_LOCAL)
            fn = getattr(self._lib, f"{project_name}_double")
        except (OSError, AttributeError) as e:
            raise EmulationError(f"{lib_path}: cannot load the C simulation ({e})") from None
        ptr = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
        fn.restype = None
        fn.argtypes = [ptr, ptr]
        self._fn = fn
        _check_first_call(lib_path, f"{project_name}_double", self.input.size, self.output.size)

    def predict(self, x) -> np.ndarray:
        """Pass float64 values straight to the C simulation, which quantizes them itself."""
        x = np.ascontiguousarray(self._check_batch(x), dtype=np.float64)
        return self._run(x.reshape(len(x), -1))

    def predict_raw(self, raw_in) -> np.ndarray:
        raw = np.asarray(raw_in, dtype=np.int64)
        if raw.shape[1:] != self.input.shape:
            raw = raw.reshape((-1,) + self.input.shape)
        # Raw values on the input grid are exact in double, so the conversion inside the bridge is lossless.
        x = self.input.format.to_float(raw).reshape(len(raw), -1)
        return self.output.format.quantize(self._run(np.ascontiguousarray(x)))

    def _run(self, x2d: np.ndarray) -> np.ndarray:
        n = len(x2d)
        out = np.zeros((n, self.output.size), dtype=np.float64)
        fn = self._fn
        for i in range(n):
            fn(x2d[i], out[i])
        return out.reshape((n,) + self.output.shape)


class FastEmulator(Emulator):
    """The integer engine: whole batches, bit-identical to the C simulation."""

    name = "fast"

    def __init__(self, package_dir: str | os.PathLike):
        from .engine import Engine

        root = Path(package_dir)
        self.input, self.output = read_ports(root, verify=(f"{ENGINE_DIR.as_posix()}/",))
        self.engine = Engine.load(root / ENGINE_DIR)
        # The engine's compiled predict quantizes and scales with its own graph's formats: the fused call
        # stands in for the manifest's ports only where those are the same formats.
        self._fused = (self.engine.input_node.format == self.input.format
                       and self.engine.output_node.format == self.output.format)

    def predict(self, x) -> np.ndarray:
        x = self._check_batch(x)
        if self._fused:
            return self.engine.predict(x)
        # Quantize, run and convert back one cache-sized chunk at a time: whole-batch passes over large
        # inputs cost more than the network itself.
        n, step = len(x), self.engine.chunk
        out = np.empty((n,) + self.output.shape, dtype=np.float64)
        in_fmt, out_fmt = self.input.format, self.output.format
        for i in range(0, n, step):
            out[i : i + step] = out_fmt.to_float(self.engine.run_raw(in_fmt.quantize(x[i : i + step])))
        return out

    def predict_raw(self, raw_in) -> np.ndarray:
        raw = np.asarray(raw_in, dtype=np.int64)
        if raw.shape[1:] != self.input.shape:
            raw = raw.reshape((-1,) + self.input.shape)
        return self.engine.run_raw(raw)

    def trace_raw(self, raw_in) -> dict[str, np.ndarray]:
        """Every layer's raw output, by layer name."""
        raw = np.asarray(raw_in, dtype=np.int64).reshape((-1,) + self.input.shape)
        return self.engine.run_raw(raw, trace=True)


def load_emulator(package_dir: str | os.PathLike, engine: str = "fast") -> Emulator:
    if engine == "fast":
        return FastEmulator(package_dir)
    if engine == "csim":
        return CsimEmulator(package_dir)
    if engine == "rtl":  # the Verilator model of the package's RTL core (`lepton-hls rtl DIR` builds it)
        from .rtl_emulator import load_rtl_emulator

        return load_rtl_emulator(package_dir)
    raise EmulationError(f"unknown emulator engine {engine!r}; choose one of {', '.join(ENGINES)}")


def _project_name(root: Path) -> str:
    if (root / "manifest.json").is_file():
        try:
            return load_manifest(root, verify=False).hls.project_name
        except LeptonError:
            pass
    return "myproject"


# The first call, made by a fresh interpreter that loads nothing but the library (no numpy, no threads).
_FIRST_CALL = (
    "import ctypes, os, sys\n"
    "fn = getattr(ctypes.CDLL(sys.argv[1], mode=os.RTLD_LOCAL), sys.argv[2])\n"
    "fn.restype = None\n"
    "fn((ctypes.c_double * int(sys.argv[3]))(), (ctypes.c_double * int(sys.argv[4]))())\n"
)


def _check_first_call(lib_path: Path, symbol: str, n_in: int, n_out: int) -> None:
    """A C simulation compiled with hls4ml's default WriteWeightsTxt reads its weight files at its first call and
    calls exit(1) when they are gone (packages from `lepton-hls build` look beside the library, in
    hls/firmware/weights; hls4ml's own libraries look in the absolute directory they were compiled in). Make that
    first call in a child process, so such a library is refused with a message instead of ending this process.
    The child is a new interpreter, not a fork: a fork of a process that runs other threads (TensorFlow's,
    a server's) can hang on a lock one of them held."""
    import subprocess
    import sys

    if b"load_weights_from_txt" not in lib_path.read_bytes():
        return
    cmd = [sys.executable, "-c", _FIRST_CALL, str(lib_path.resolve()), symbol, str(n_in), str(n_out)]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise EmulationError(f"{lib_path} did not return from its first call within 120 s") from None
    if r.returncode != 0:
        said = (r.stdout + r.stderr).decode(errors="replace").strip()
        detail = said.splitlines()[0] if said else "it exited at its first call"
        raise EmulationError(
            f"{lib_path} cannot run: {detail}. It reads its weight files from the package's hls/firmware/weights "
            "(or, built by an older tool, from the project it was compiled in): restore hls/ or rebuild the package "
            "with `lepton-hls build`"
        )
