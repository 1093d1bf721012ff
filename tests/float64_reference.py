"""A conversion's C simulation against the model run in float64, on inputs on the input grid: the check of every
exactness claim that needs no package. Imports TensorFlow and hls4ml inside the functions only."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_json_model(model, folder: Path):
    """`model` as a .json architecture and an .h5 of weights in `folder` -> lepton_hls.keras_io.ModelFiles."""
    from lepton_hls.keras_io import ModelFiles

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "weights.h5"
    model.save_weights(str(weights))
    return ModelFiles("m", str(folder / "model.json"), model.to_json(), weights)


def grid_inputs(model, n: int = 2000) -> np.ndarray:
    """`n` inputs on the default input type's grid, spread over its range."""
    from lepton_hls.build_config import BuildConfig
    from lepton_host.fixedpoint import FixedFormat

    fmt = FixedFormat.parse(BuildConfig().input_precision)
    x = 2 * np.random.default_rng(1).standard_normal((n, *model.input_shape[1:]))
    return fmt.cast(np.clip(x, fmt.min_value, fmt.max_value))


def csim_vs_float64(model, folder: Path, cfg=None):
    """(identical-row fraction, ConversionReport, hls_model): `model` converted with `cfg` (a BuildConfig; the
    default one unless given), compiled, and compared with its float64 twin on the input grid."""
    from lepton_hls.build_config import BuildConfig
    from lepton_hls.convert import convert
    from lepton_hls.keras_io import load_keras

    hls_model, report = convert(model, cfg or BuildConfig(), str(folder / "hls"))
    hls_model.compile()
    x = grid_inputs(model)
    got = np.asarray(hls_model.predict(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64)
    ref = load_keras(save_json_model(model, folder), "float64").predict(x, verbose=0)
    got, ref = got.reshape(len(x), -1), np.asarray(ref, dtype=np.float64).reshape(len(x), -1)
    return float(np.mean(np.all(got == ref, axis=1))), report, hls_model
