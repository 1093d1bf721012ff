"""The inference paths behind `lepton_host.backend.Backend`: a real PYNQ board, the emulated board (the real
pynq library driving a bit-exact model), and the emulator alone (no pynq at all).

    backend = open_backend("packages/jet_tagger", kind="auto")
    y = backend.predict(x)          # raw features -> float64 outputs, a fresh array every call
    backend.health(); backend.self_test(); backend.close()

`auto` takes the real board when pynq finds one, else the emulator.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np

from .backend import Backend, Health
from .errors import EmulationError, InputShapeError, LeptonError
from .manifest import load_manifest
from .selftest import SelfTestResult, golden_vectors, run_self_test

KINDS = ("auto", "board", "emulated-board", "emulator")  # where inference runs: `--target` on the command line
# The bit-exact model behind the emulated board and the emulator, whichever entry point opens them: the fast
# engine (bit-identical to the C simulation, ~100x faster); "csim" and "rtl" on request.
DEFAULT_ENGINE = "fast"


class EmulatorBackend:
    """The package's bit-exact emulator on the host CPU: no board, no pynq."""

    def __init__(self, package_dir, engine: str = DEFAULT_ENGINE):
        from .emulator import load_emulator

        self.package_dir = Path(package_dir)
        self.manifest = load_manifest(self.package_dir, verify=True)
        self.emulator = load_emulator(self.package_dir, engine)
        self.name = f"emulator-{engine}"
        self._lock = threading.Lock()

    def predict(self, x, timeout: float | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        shape = tuple(self.manifest.input.shape)
        if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
            raise InputShapeError(f"{self.manifest.model.name} takes a batch of shape (N, {shape}); got {x.shape}")
        y = self.manifest.preprocessing.apply(x)
        with self._lock:  # the C simulation keeps static state between calls
            return np.array(self.emulator.predict(y), dtype=np.float64)

    def health(self) -> Health:
        return Health(ok=True, detail=f"{self.manifest.model.name} emulated on the host CPU", device=self.name)

    def self_test(self) -> SelfTestResult:
        """The package's golden vectors through this emulator, bit for bit (see selftest.py)."""
        vectors = golden_vectors(self.package_dir, self.manifest)
        with self._lock:
            return run_self_test(self.emulator.predict_raw, vectors, f"{self.manifest.model.name} on {self.name}")

    def close(self) -> None:
        pass


class BoardBackend:
    """An `Accelerator` on a pynq device: the real board, or the emulated one."""

    def __init__(self, package_dir, *, device=None, name: str = "board", **load_kw):
        from .runtime import Accelerator

        self.name = name
        self.accelerator = Accelerator.load(package_dir, device=device, **load_kw)
        self.manifest = self.accelerator.manifest
        self._lock = threading.Lock()

    def predict(self, x, timeout: float | None = None) -> np.ndarray:
        with self._lock:  # one DMA, one caller at a time
            return self.accelerator.predict(x, timeout=timeout)

    def health(self) -> Health:
        try:
            ok, detail = self.accelerator.health()
        except LeptonError as e:
            ok, detail = False, str(e)
        return Health(ok=ok, detail=detail, device=str(getattr(self.accelerator.device, "name", self.name)))

    def self_test(self) -> SelfTestResult:
        """The package's golden vectors through the board, bit for bit (see selftest.py)."""
        with self._lock:
            return self.accelerator.self_test()

    def close(self) -> None:
        with self._lock:
            self.accelerator.close()


def emulated_board_backend(package_dir, engine: str = DEFAULT_ENGINE, **load_kw) -> BoardBackend:
    """Switch the emulated board on, attach the package's bit-exact model (`csim` or `fast`) to it, and load
    the package through the real pynq library."""
    from . import board
    from .emulator import load_emulator

    dev = board.enable()
    manifest = load_manifest(package_dir, verify=True)
    dev.attach(load_emulator(package_dir, engine), model_sha256=manifest.model.sha256)
    return BoardBackend(package_dir, device=dev, name=f"emulated-board-{engine}", **load_kw)


def real_board_available() -> bool:
    try:
        from pynq.pl_server.device import Device
    except ImportError:
        return False
    try:
        with warnings.catch_warnings():  # off-board, pynq warns that XRT finds no device: that is the answer
            warnings.simplefilter("ignore", UserWarning)
            return any(type(d).__name__ != "EmulatedBoard" for d in Device.devices)
    except Exception:  # pynq's probe itself fails off-board (no XRT, no FPGA manager)
        return False


def open_backend(package_dir, kind: str = "auto", engine: str = DEFAULT_ENGINE, **load_kw) -> Backend:
    """The backend of `kind` for a package (see KINDS)."""
    if kind not in KINDS:
        raise EmulationError(f"unknown backend {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = "board" if real_board_available() else "emulator"
    if kind == "emulator":
        return EmulatorBackend(package_dir, engine=engine)
    if kind == "emulated-board":
        return emulated_board_backend(package_dir, engine=engine, **load_kw)
    from pynq.pl_server.device import Device

    real = [d for d in Device.devices if type(d).__name__ != "EmulatedBoard"]
    if not real:
        from .runtime import DeviceMissingError

        raise DeviceMissingError("pynq finds no board here; use --target emulated-board or emulator")
    return BoardBackend(package_dir, device=real[0], name="board", **load_kw)
