"""A built overlay package as a Python object: its manifest and a bit-exact `predict`.

    >>> import lepton_hls
    >>> pkg = lepton_hls.load("out/jet_tagger")
    >>> y = pkg.predict(x)            # model-domain inputs, bit-identical to the C simulation
    >>> y = pkg.predict_features(raw) # raw features: the manifest's preprocessing first
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lepton_host.emulator import load_emulator
from lepton_host.manifest import Manifest, load_manifest


class Package:
    def __init__(self, package_dir, engine: str = "fast", verify: bool = True) -> None:
        self.path = Path(package_dir)
        self.manifest: Manifest = load_manifest(self.path, verify=verify)
        self._engine = engine
        self._emulators: dict = {}

    def emulator(self, engine: str | None = None):
        engine = engine or self._engine
        if engine not in self._emulators:
            self._emulators[engine] = load_emulator(self.path, engine=engine)
        return self._emulators[engine]

    def predict(self, x, engine: str | None = None) -> np.ndarray:
        """Model-domain inputs (N, *input_shape) -> outputs exactly as the accelerator computes them."""
        return self.emulator(engine).predict(x)

    def predict_features(self, raw, engine: str | None = None) -> np.ndarray:
        return self.predict(self.manifest.preprocessing.apply(raw), engine)

    def __repr__(self) -> str:
        m = self.manifest
        return f"Package({self.path}, model={m.model.name}, {m.input.shape}->{m.output.shape}, {m.hls.backend})"


def load(package_dir, engine: str = "fast", verify: bool = True) -> Package:
    return Package(package_dir, engine=engine, verify=verify)
