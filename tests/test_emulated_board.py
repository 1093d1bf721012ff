"""The emulated PYNQ board: the unmodified pynq library (Overlay, allocate, DMA) drives a real hls4ml C
simulation through emulated AXI DMA registers; the runtime's results must equal the C simulation bit for bit,
every injected fault must surface as its typed error in time, and the runtime must serve again afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pynq = pytest.importorskip("pynq")

from lepton_host import board  # noqa: E402
from paths import example_model, require  # noqa: E402
from tiny_package import build_tiny_package  # noqa: E402
from lepton_host.emulator import CsimEmulator  # noqa: E402
from lepton_host.errors import InputShapeError  # noqa: E402
from lepton_host.manifest import load_manifest  # noqa: E402
from lepton_host.packing import check_word, pack, packet_words, unpack, words_for  # noqa: E402
from lepton_host.runtime import (  # noqa: E402
    Accelerator,
    CorruptOutputError,
    DeviceMissingError,
    DeviceTimeoutError,
    ShortTransferError,
)

HLS4ML_DRIVER = "templates/vivado_accelerator/pynq-z2/python_drivers/axi_stream_driver.py"


# ---- real packages, built once per session ---------------------------------------------------------------------
_BUILT: dict = {}  # one build per session, shared with the other board test modules that import `tiny`


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(package_dir, reference) where reference(x) is hls4ml's own csim predict on preprocessed inputs."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        _BUILT[key] = build_tiny_package(tmp_path_factory.mktemp("tiny_mlp"))
    pkg, hls = _BUILT[key]
    m = load_manifest(pkg)

    def reference(x):
        xq = m.input.format.cast(m.preprocessing.apply(x))  # on the grid: csim's own conversion is exact
        return np.asarray(hls.predict(np.ascontiguousarray(xq)), dtype=np.float64).reshape(len(x), -1)

    return pkg, reference


@pytest.fixture()
def dev(tiny):
    pkg, _ = tiny
    d = board.enable()
    d.clear()
    d.attach(CsimEmulator(pkg), model_sha256=load_manifest(pkg).model.sha256)
    yield d
    d.clear()


def inputs(n, seed=0, n_in=16):
    return np.random.default_rng(seed).uniform(-6, 6, size=(n, n_in))


# ---- pynq itself on the emulated board -------------------------------------------------------------------------
def test_pynq_probe_finds_the_board_only_when_switched_on():
    from pynq.pl_server.device import Device

    board.disable()
    assert not any(isinstance(d, board.EmulatedBoard) for d in Device.devices)
    d = board.enable()
    assert Device.active_device is d
    assert d.has_capability("MEMORY_MAPPED")


def test_unmodified_pynq_overlay_dma_and_allocate_round_trip(tiny, dev, tmp_path):
    """No lepton runtime involved: pynq's own Overlay, DMA channels and allocate move packed words through
    the emulated DMA into the C simulation and back."""
    pkg, reference = tiny
    m = load_manifest(pkg)
    bit = board.write_overlay(m, tmp_path)
    ol = pynq.Overlay(str(bit))
    assert "axi_dma_0" in ol.ip_dict
    dma = ol.axi_dma_0
    x = inputs(3)
    words = pack(m.input.format.quantize(x), m.input.format)
    ib = pynq.allocate(words.shape, np.uint32)
    ob = pynq.allocate((packet_words(3 * 5, m.output.format),), np.uint32)  # data words + check word
    ib[:] = words
    dma.recvchannel.transfer(ob)
    dma.sendchannel.transfer(ib)
    dma.sendchannel.wait()
    dma.recvchannel.wait()
    assert dma.recvchannel.transferred == ob.nbytes
    got = m.output.format.to_float(unpack(ob, m.output.format, 15)).reshape(3, 5)
    assert int(ob[-1]) == check_word(ob[:-1])
    np.testing.assert_array_equal(got, reference(x))


def test_hls4ml_generated_driver_runs_unmodified_on_the_float_stream_overlay(tiny, dev, tmp_path):
    import importlib.util

    pkg, reference = tiny
    m = load_manifest(pkg)
    bit = board.write_overlay(m, tmp_path, flavour="hls4ml")
    # Located without importing hls4ml (which would bring TensorFlow into this pynq-side module).
    hls4ml_dir = Path(importlib.util.find_spec("hls4ml").origin).parent
    spec = importlib.util.spec_from_file_location("axi_stream_driver", hls4ml_dir / HLS4ML_DRIVER)
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    x = inputs(4, seed=3)
    nn = driver.NeuralNetworkOverlay(str(bit), x_shape=(4, 16), y_shape=(4, 5))
    y = nn.predict(m.input.format.cast(x).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(y, dtype=np.float64), reference(x))


# ---- bit-exactness through the runtime -------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 50])
def test_runtime_matches_csim_bit_for_bit(tiny, dev, n):
    pkg, reference = tiny
    acc = Accelerator.load(pkg, max_batch=16)  # 50 > 16: streamed in four chunks through two buffer pairs
    x = inputs(n, seed=n)
    y = acc.predict(x)
    assert y.shape == (n, 5) and y.dtype == np.float64
    np.testing.assert_array_equal(y, reference(x))
    acc.close()


# ---- faults ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, params, error",
    [
        ("hang", {}, DeviceTimeoutError),
        ("slow", {"delay_s": 1.0}, DeviceTimeoutError),
        ("short", {}, ShortTransferError),
        ("corrupt", {}, CorruptOutputError),
        ("missing", {}, DeviceMissingError),
    ],
)
def test_each_fault_raises_its_typed_error_in_time_and_the_runtime_recovers(tiny, dev, kind, params, error):
    pkg, reference = tiny
    acc = Accelerator.load(pkg, max_batch=16, timeout_s=0.2)
    x = inputs(3, seed=11)
    np.testing.assert_array_equal(acc.predict(x), reference(x))
    dev.inject(kind, **params)
    with pytest.raises(error):
        acc.predict(x)
    dev.clear()
    # The late packet of a slow board must be discarded by the runtime's reset, not delivered to the next call.
    assert not any(d._packets for d in dev._dmas.values())
    for n in (3, 40):
        xx = inputs(n, seed=n)
        np.testing.assert_array_equal(acc.predict(xx), reference(xx))
    assert acc.health()[0]


def test_slow_fault_within_the_timeout_still_returns_correct_results(tiny, dev):
    pkg, reference = tiny
    acc = Accelerator.load(pkg, timeout_s=2.0)
    dev.inject("slow", delay_s=0.05)
    x = inputs(5, seed=5)
    np.testing.assert_array_equal(acc.predict(x), reference(x))


def test_an_accelerator_without_a_model_reports_a_dma_slave_error_not_a_timeout(tiny, dev):
    from lepton_host.runtime import DmaError

    pkg, reference = tiny
    sha = load_manifest(pkg).model.sha256
    acc = Accelerator.load(pkg, timeout_s=30.0)
    compute = dev._computes[sha]
    dev.detach(sha)
    with pytest.raises(DmaError, match="slave error.*no model attached"):  # at once: timeout_s is 30 s
        acc.predict(inputs(2))
    dev.attach(compute, model_sha256=sha)
    np.testing.assert_array_equal(acc.predict(inputs(2)), reference(inputs(2)))


def test_missing_device_at_load_is_a_typed_error(tiny, dev):
    pkg, _ = tiny
    dev.inject("missing")
    with pytest.raises(DeviceMissingError, match="no device"):
        Accelerator.load(pkg)
    dev.clear()
    assert Accelerator.load(pkg).predict(inputs(1)).shape == (1, 5)


# ---- hazards of hls4ml's generated driver, each avoided ------------------------------------------------------
def test_returns_a_fresh_array_not_its_dma_buffer(tiny, dev):
    pkg, reference = tiny
    acc = Accelerator.load(pkg)
    a, b = inputs(2, seed=1), inputs(2, seed=2)
    ya = acc.predict(a)
    keep = ya.copy()
    yb = acc.predict(b)
    np.testing.assert_array_equal(ya, keep)  # the second call did not overwrite the first result
    assert not np.shares_memory(ya, yb)
    assert not any(np.shares_memory(ya, s.out) for s in acc._slots)


@pytest.mark.parametrize("shape", [(16,), (2, 15), (2, 17), (2, 16, 1), (2, 4, 4)])
def test_rejects_a_wrongly_shaped_batch(tiny, dev, shape):
    pkg, _ = tiny
    acc = Accelerator.load(pkg)
    with pytest.raises(InputShapeError, match=r"\(N, 16\)"):
        acc.predict(np.zeros(shape))


def test_honours_the_callers_download_and_device_choice(tiny, dev):
    pkg, _ = tiny
    Accelerator.load(pkg, device=dev)
    before = dev.downloads
    Accelerator.load(pkg, device=dev)  # already loaded: no reprogramming
    Accelerator.load(pkg, device=dev, download=False)
    assert dev.downloads == before
    Accelerator.load(pkg, device=dev, download=True)
    assert dev.downloads == before + 1


def test_transfers_are_sized_to_the_batch(tiny, dev):
    pkg, _ = tiny
    m = load_manifest(pkg)
    acc = Accelerator.load(pkg, max_batch=16)
    dma = dev.dma()
    for n in (1, 3, 16):
        dma.transfers.clear()
        acc.predict(inputs(n))
        sent = {ch: nbytes for ch, _, nbytes in dma.transfers}
        assert sent["mm2s"] == 4 * words_for(n * 16, m.input.format)
        assert sent["s2mm"] == 4 * packet_words(n * 5, m.output.format)
    dma.transfers.clear()
    acc.predict(inputs(40))  # larger than the buffers: 16 + 16 + 8 samples
    sent = [b for ch, _, b in dma.transfers if ch == "mm2s"]
    assert sent == [4 * words_for(k * 16, m.input.format) for k in (16, 16, 8)]


# ---- every zoo and example model, built by `lepton-hls build` (slow) ------------------------------------------
ALL_MODELS = ["jet_tagger", "digits_cnn", "anomaly_ae"] + [
    example_model(n) for n in ("qkeras_3layer", "qkeras_mnist_cnn", "KERAS_3layer", "KERAS_conv2d_model")
]


@pytest.fixture(scope="session")
def built_packages(tmp_path_factory):
    cache: dict = {}

    def get(model):
        if model not in cache:
            from lepton_hls.build import build_package
            from lepton_hls.build_config import load_config

            out = tmp_path_factory.mktemp(Path(model).stem)
            build_package(require(model), out / "pkg", load_config(None), verify_samples=200)
            cache[model] = out / "pkg"
        return cache[model]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["csim", "fast"])
@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: Path(m).stem)
def test_every_model_on_the_emulated_board_matches_its_c_simulation(built_packages, model, engine):
    from lepton_host.emulator import load_emulator

    pkg = built_packages(model)
    m = load_manifest(pkg)
    d = board.enable()
    d.clear()
    d.attach(load_emulator(pkg, engine), model_sha256=m.model.sha256)
    csim = CsimEmulator(pkg)
    acc = Accelerator.load(pkg, device=d, max_batch=4, timeout_s=30.0)
    rng = np.random.default_rng(7)
    fmt = m.input.format
    for n in (1, 7, 9):  # 7 and 9 exceed the 4-sample buffers: streamed in chunks
        y_model = rng.uniform(max(fmt.min_value, -4), min(fmt.max_value, 4), size=(n,) + tuple(m.input.shape))
        pre = m.preprocessing
        x = y_model if pre.kind == "identity" else y_model * np.asarray(pre.scale) + np.asarray(pre.mean)
        expected = csim.predict(pre.apply(x)).reshape((n,) + tuple(m.output.shape))
        np.testing.assert_array_equal(acc.predict(x), expected)
    acc.close()
