"""The board runtime reads the package's overlay through the manifest's typed section (`Manifest.overlay`)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pynq = pytest.importorskip("pynq")

from test_emulated_board import dev, inputs, tiny  # noqa: E402,F401  (shared session build)
from lepton_host.manifest import OVERLAY_REPORT, load_manifest  # noqa: E402
from lepton_host.runtime import DEFAULT_MAX_BATCH, Accelerator  # noqa: E402


def test_the_overlay_sections_batch_sizes_the_buffers(tiny, dev, tmp_path):
    src, reference = tiny
    pkg = tmp_path / "pkg"
    shutil.copytree(src, pkg)
    acc = Accelerator.load(pkg)
    assert load_manifest(pkg).overlay is None and acc.max_batch == DEFAULT_MAX_BATCH
    acc.close()

    m = load_manifest(pkg)
    m.set_report(OVERLAY_REPORT, {"board": "pynq-z2", "dma": "feeder_dma", "ip": "lepton_accel_0", "max_batch": 3,
                                  "dma_length_width": 14})  # fmt: skip
    m.save(pkg)
    acc = Accelerator.load(pkg)
    try:
        assert acc.max_batch == 3 and acc.dma is acc.overlay.feeder_dma
        x = inputs(10)
        np.testing.assert_array_equal(acc.predict(x), reference(x))  # four chunks through 3-sample buffers
    finally:
        acc.close()
