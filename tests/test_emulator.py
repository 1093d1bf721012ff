"""Both emulators on a package directory: the ctypes C simulation against hls4ml's own predict, the fast engine
against the C simulation, on floats and on raw stream integers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lepton_host.emulator import CsimEmulator, FastEmulator, load_emulator
from lepton_host.errors import EmulationError, InputShapeError, LeptonError


@pytest.fixture(scope="module")
def text_weights_project(tmp_path_factory):
    """A tiny network compiled by hls4ml as it writes projects by default (the C simulation reads its weights
    from text files in the project at first call), exported as emulation/ + engine/ with no manifest. The jet
    tagger package (conftest's, as `build` writes it) serves the comparisons of the two emulators."""
    import hls4ml
    import tensorflow as tf
    from tensorflow.keras import layers

    from lepton_hls.engine_export import export_emulation

    tf.keras.utils.set_random_seed(3)
    inp = layers.Input((6,), name="a")
    h = layers.Dense(5, activation="relu", name="b")(inp)
    model = tf.keras.Model(inp, layers.Dense(3, name="c")(h))
    root = tmp_path_factory.mktemp("text_weights")
    hls_model = hls4ml.converters.convert_from_keras_model(
        model, hls_config=hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis"),
        output_dir=str(root / "hls"), backend="Vitis", io_type="io_parallel",
    )
    hls_model.compile()
    export_emulation(hls_model, root / "pkg")
    return hls_model, root


def _batches(shape, fmt):
    rng = np.random.default_rng(11)
    return {
        "grid": fmt.cast(rng.normal(0, 1, (300, *shape))),
        "off": rng.normal(0, 2, (300, *shape)),
        "saturating": rng.normal(0, 1, (300, *shape)) * rng.choice([1.0, 50.0, 5000.0], size=(300, *shape)),
    }


def test_csim_emulator_is_hls4ml_predict(text_weights_project):
    hls_model, root = text_weights_project
    pkg = root / "pkg"
    emu = CsimEmulator(pkg)
    for kind, x in _batches(emu.input.shape, emu.input.format).items():
        ours = emu.predict(x)
        theirs = np.asarray(hls_model.predict(np.ascontiguousarray(x, dtype=np.float64)), dtype=np.float64)
        np.testing.assert_array_equal(ours, theirs.reshape(ours.shape), err_msg=kind)
        assert ours.dtype == np.float64


def test_fast_emulator_matches_csim_on_floats_and_raw_words(jet_package):
    pkg = jet_package
    csim, fast = CsimEmulator(pkg), FastEmulator(pkg)
    assert (fast.input, fast.output) == (csim.input, csim.output)
    for kind, x in _batches(csim.input.shape, csim.input.format).items():
        np.testing.assert_array_equal(fast.predict(x), csim.predict(x), err_msg=kind)
    # Raw integers as unpacked from stream words, including values outside the format (the lanes are wider
    # than the format): both wrap them like the C simulation's input conversion.
    fmt = csim.input.format
    rng = np.random.default_rng(5)
    raw = rng.integers(fmt.raw_min * 3, fmt.raw_max * 3, size=(400, *csim.input.shape), dtype=np.int64)
    out_c, out_f = csim.predict_raw(raw), fast.predict_raw(raw)
    assert out_c.dtype == out_f.dtype == np.int64
    np.testing.assert_array_equal(out_f, out_c)
    assert out_c.min() >= csim.output.format.raw_min and out_c.max() <= csim.output.format.raw_max


def test_predict_raw_agrees_with_predict(jet_package):
    pkg = jet_package
    for engine in ("fast", "csim"):
        emu = load_emulator(pkg, engine)
        x = np.random.default_rng(2).normal(0, 1, (64, *emu.input.shape))
        raw_out = emu.predict_raw(emu.input.format.quantize(x))
        np.testing.assert_array_equal(emu.output.format.to_float(raw_out), emu.predict(x))


def test_trace_names_every_layer(text_weights_project):
    pkg = text_weights_project[1] / "pkg"
    fast = FastEmulator(pkg)
    trace = fast.trace_raw(np.zeros((3, *fast.input.shape), dtype=np.int64))
    assert fast.output.name in trace and fast.input.name in trace
    assert all(v.shape[0] == 3 for v in trace.values())


def test_errors_are_actionable(text_weights_project, tmp_path):
    pkg = text_weights_project[1] / "pkg"
    with pytest.raises(EmulationError, match="unknown emulator engine"):
        load_emulator(pkg, "verilog")
    with pytest.raises(InputShapeError, match=r"\(N, 6\)"):
        FastEmulator(pkg).predict(np.zeros((4, 5)))
    with pytest.raises(LeptonError):
        FastEmulator(tmp_path)
    # A package without its C simulation library.
    no_lib = tmp_path / "no_lib"
    shutil.copytree(pkg, no_lib)
    (no_lib / "emulation" / "csim.so").unlink()
    with pytest.raises(EmulationError, match="csim.so is missing"):
        CsimEmulator(no_lib)


def test_csim_library_whose_weight_files_are_gone_is_refused(text_weights_project, tmp_path):
    """hls4ml's default C simulation reads its weights at first call from the project's absolute path and calls
    exit(1) when they are gone; the emulator refuses such a library instead of letting it kill the process."""
    _, root = text_weights_project
    x = np.ones((2, 6))
    np.testing.assert_array_equal(CsimEmulator(root / "pkg").predict(x), FastEmulator(root / "pkg").predict(x))
    # The package alone, without the project it was compiled in (a fresh copy: the library loaded above
    # already holds its weights). The project's weights are put back afterwards for the module's other tests.
    shutil.copytree(root / "pkg", tmp_path / "moved")
    weights = root / "hls" / "firmware" / "weights"
    weights.rename(tmp_path / "weights")
    try:
        with pytest.raises(EmulationError, match="restore hls/ or rebuild the package") as err:
            CsimEmulator(tmp_path / "moved")
    finally:
        (tmp_path / "weights").rename(weights)
    assert "does not exist" in str(err.value)  # the library's own complaint, naming the missing file
