"""Open the edge side of a package as a `lepton_host.backend.Backend`.

Preference order: the board runtime's own backends (`lepton_host.backends`: a real board, or the emulated
board through pynq) when that module is present, else the package's bit-exact emulator wrapped here. Either
way the gateway sees raw features in, model outputs out.
"""

from __future__ import annotations

import importlib
import os
import threading

import numpy as np

from lepton_host.backend import Health
from lepton_host.errors import LeptonError
from lepton_host.manifest import Manifest, load_manifest

BOARD_KINDS = ("auto", "board", "emulated-board", "emulator")


class EmulatorBackend:
    """The package's emulator as a Backend: preprocessing, then the bit-exact integer engine (or the C
    simulation). A lock serialises calls as a single accelerator would."""

    def __init__(self, package_dir: str | os.PathLike, manifest: Manifest | None = None, engine: str = "fast"):
        from lepton_host.emulator import load_emulator

        self.manifest = manifest or load_manifest(package_dir)
        self.emulator = load_emulator(package_dir, engine)
        self.name = f"emulator-{engine}"
        self._lock = threading.Lock()

    def predict(self, x: np.ndarray, timeout: float | None = None) -> np.ndarray:
        x_pre = self.manifest.preprocessing.apply(x)
        with self._lock:
            return np.array(self.emulator.predict(x_pre), dtype=np.float64)

    def health(self) -> Health:
        return Health(True, "emulator", self.name)

    def close(self) -> None:
        pass


def open_edge_backend(package_dir: str | os.PathLike, kind: str = "auto", manifest: Manifest | None = None):
    """-> a Backend for `package_dir`. `kind`: board | emulated-board | emulator | auto (the board runtime's
    choice when it has one, else the emulator)."""
    if kind not in BOARD_KINDS:
        raise LeptonError(f"unknown edge backend {kind!r}; choose one of {', '.join(BOARD_KINDS)}")
    if kind != "emulator":
        try:
            backends = importlib.import_module("lepton_host.backends")
        except ImportError:
            backends = None
        opener = getattr(backends, "open_backend", None) if backends else None
        if opener is not None:
            return opener(package_dir, kind=kind) if kind != "auto" else opener(package_dir)
        if kind != "auto":
            raise LeptonError(
                f"edge backend {kind!r} needs lepton_host.backends, which this installation lacks; "
                "use --board emulator"
            )
    return EmulatorBackend(package_dir, manifest)
