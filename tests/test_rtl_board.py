"""The emulated board and the backends the gateway uses, running on the package's RTL (Verilator) model."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pynq")


def test_emulated_board_serves_the_package_from_the_rtl_model(tiny_rtl):
    pytest.importorskip("pynq")
    from lepton_host import board
    from lepton_host.emulator import CsimEmulator
    from lepton_host.manifest import load_manifest
    from lepton_host.rtl_emulator import load_rtl_emulator
    from lepton_host.runtime import Accelerator

    pkg, _ = tiny_rtl
    m = load_manifest(pkg)
    d = board.enable()
    d.clear()
    d.attach(load_rtl_emulator(pkg), model_sha256=m.model.sha256)
    try:
        acc = Accelerator.load(pkg, device=d, max_batch=8, timeout_s=30.0)
        x = np.random.default_rng(5).uniform(-6, 6, size=(20, 16))  # 20 > 8: streamed in chunks
        np.testing.assert_array_equal(acc.predict(x), CsimEmulator(pkg).predict(m.preprocessing.apply(x)))
        acc.close()
    finally:
        d.detach(m.model.sha256)
        d.clear()


def test_rtl_engine_behind_the_emulator_and_emulated_board_backends(tiny_rtl):
    from lepton_host.backends import open_backend
    from lepton_host.emulator import CsimEmulator
    from lepton_host.manifest import load_manifest

    pkg, _ = tiny_rtl
    m = load_manifest(pkg)
    x = np.random.default_rng(8).uniform(-8, 8, size=(13, 16))
    want = CsimEmulator(pkg).predict(m.preprocessing.apply(x))
    for kind in ("emulator", "emulated-board"):
        backend = open_backend(pkg, kind=kind, engine="rtl")
        try:
            np.testing.assert_array_equal(backend.predict(x).reshape(want.shape), want)
            assert backend.health().ok
        finally:
            backend.close()
