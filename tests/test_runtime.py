"""The board runtime and the backends the gateway uses, on the emulated board (real pynq, real C simulation)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("pynq")

from test_emulated_board import dev, inputs, tiny  # noqa: E402,F401  (shared session build)

from lepton_host.backend import Backend  # noqa: E402
from lepton_host.backends import EmulatorBackend, emulated_board_backend, open_backend  # noqa: E402
from lepton_host.errors import ChecksumError, EmulationError  # noqa: E402
from lepton_host.manifest import Preprocessing, load_manifest  # noqa: E402
from lepton_host.packing import words_for  # noqa: E402
from lepton_host.runtime import Accelerator  # noqa: E402


def test_throughput_test_reports_every_stage(tiny, dev):
    pkg, _ = tiny
    m = load_manifest(pkg)
    acc = Accelerator.load(pkg, max_batch=64)
    dma = dev.dma()
    dma.transfers.clear()
    fabric_before = dev.fabric_seconds
    report = acc.throughput_test(samples=300)
    d = report.as_dict()
    assert report.samples == 300 and report.batch == 64
    # 300 samples in buffers of 64: four full transfers and one of 44, each measured.
    sent = [b for ch, _, b in dma.transfers if ch == "mm2s"]
    assert sent == [4 * words_for(k * 16, m.input.format) for k in (64, 64, 64, 64, 44)]
    stages = ("pack_s", "transfer_s", "compute_s", "unpack_s")
    # Packing, the fabric and unpacking did work on every batch: each took time. The transfer is what is
    # left of the DMA wait once the fabric's share is taken out, so it may be (close to) nothing.
    for stage in ("pack_s", "compute_s", "unpack_s"):
        assert d[stage] > 0.0, stage
    assert d["transfer_s"] >= 0.0
    # The compute stage is the emulated fabric's own time, counted by the device during this run.
    assert report.compute_s == pytest.approx(dev.fabric_seconds - fabric_before)
    # The stages are disjoint parts of the run: together no more than the whole.
    assert sum(d[s] for s in stages) <= report.total_s * (1 + 1e-9)  # float rounding only
    for stage in stages + ("total_s",):
        assert d[stage.replace("_s", "_us_per_sample")] == pytest.approx(1e6 * d[stage] / 300)
    assert d["samples_per_s"] == pytest.approx(300 / report.total_s)
    assert d["in_bytes_per_sample"] == 16 * 2 and d["out_bytes_per_sample"] == 5 * 2
    json.dumps(d)


def test_the_manifest_scaler_is_applied_before_quantization(tiny, dev, tmp_path):
    pkg, reference = tiny
    scaled = tmp_path / "scaled"
    shutil.copytree(pkg, scaled)
    m = load_manifest(scaled)
    rng = np.random.default_rng(4)
    mean, scale = rng.normal(size=16), rng.uniform(0.5, 3.0, size=16)
    m.preprocessing = Preprocessing("standard", tuple(mean), tuple(scale))
    m.save(scaled)
    acc = Accelerator.load(scaled)
    x = rng.normal(size=(9, 16)) * 3 + 1
    np.testing.assert_array_equal(acc.predict(x), reference((x - mean) / scale))


def test_a_tampered_package_is_refused_before_anything_is_loaded(tiny, dev, tmp_path):
    pkg, _ = tiny
    bad = tmp_path / "bad"
    shutil.copytree(pkg, bad)
    with open(bad / "emulation" / "csim.so", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    before = dev.downloads
    with pytest.raises(ChecksumError, match="csim.so"):
        Accelerator.load(bad)
    assert dev.downloads == before


def test_backends_agree_and_follow_the_interface(tiny, dev):
    pkg, reference = tiny
    x = inputs(12, seed=9)
    emu = EmulatorBackend(pkg, engine="csim")
    brd = emulated_board_backend(pkg, engine="csim", max_batch=8)
    for b in (emu, brd):
        assert isinstance(b, Backend)
        assert b.health().ok
        np.testing.assert_array_equal(b.predict(x), reference(x))
        b.close()
    assert brd.name == "emulated-board-csim"
    with pytest.raises(EmulationError, match="unknown backend"):
        open_backend(pkg, kind="fpga")


def test_predict_command_on_the_emulated_board_and_the_emulator(tiny, dev, tmp_path, capsys):
    from lepton_hls.cli import main

    pkg, reference = tiny
    x = inputs(6, seed=21)
    np.save(tmp_path / "x.npy", x)
    for backend in ("emulated-board", "emulator"):
        out = tmp_path / f"y_{backend}.npy"
        rc = main(["predict", str(pkg), "--input", str(tmp_path / "x.npy"), "--target", backend,
                   "--engine", "csim", "--output", str(out)])
        assert rc == 0
        np.testing.assert_array_equal(np.load(out), reference(x))
    assert "6 samples on" in capsys.readouterr().out
    np.save(tmp_path / "bad.npy", np.zeros((2, 15)))
    rc = main(["predict", str(pkg), "--input", str(tmp_path / "bad.npy"), "--target", "emulated-board",
               "--engine", "csim"])  # this hand-made package carries the C simulation only
    assert rc == 2
    assert "(N, 16)" in capsys.readouterr().err
