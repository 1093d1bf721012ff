"""Check that hls4ml's C simulation of each zoo edge model reproduces the float64 QKeras model bit for bit.

    python -m lepton_hls.zoo.check_hls [NAME ...] [--n 2000] [--work /tmp/lepton-zoo-hls]

Conversion is the plain one: `config_from_keras_model(m, granularity='name', backend='Vitis')`, io_parallel,
inputs ap_fixed<16,6>. Inputs are real evaluation data after preprocessing plus as many uniform random
rows over the same range (for jet_tagger, whose data does not ship, standard-normal features), rounded onto the
input's grid (multiples of 2^-10) and clipped to its range. The comparison is made before a final softmax (hls4ml's softmax is a lookup table, inexact by
design): on the traced output of the layer that feeds it, else on the model's output.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import get, names

INPUT_FRAC_BITS, INPUT_INT_BITS = 10, 6  # ap_fixed<16,6>


@dataclass
class HlsCheck:
    name: str
    n: int
    compared_layer: str
    identical_rows: float
    max_abs_diff: float
    argmax_agreement: float | None  # after the softmax, classifiers only


def grid_inputs(name: str, n: int, seed: int = 0) -> np.ndarray:
    """Model-domain inputs on the ap_fixed<16,6> grid: the model's evaluation data (up to n rows) followed by as
    many uniform random rows spanning the same range, which exercise every fraction bit of the input."""
    zm = get(name)
    rng = np.random.default_rng(seed)
    data = zm.eval_data(n, seed=seed)
    if data is None:
        x = rng.standard_normal((n, *zm.input_shape))
    else:
        real = zm.preprocessing.apply(data[0])
        x = np.concatenate([real, rng.uniform(real.min(), real.max(), real.shape)])
    lsb = 2.0**-INPUT_FRAC_BITS
    lo, hi = -(2.0 ** (INPUT_INT_BITS - 1)), 2.0 ** (INPUT_INT_BITS - 1) - lsb
    return np.clip(np.round(x / lsb) * lsb, lo, hi)


def check(name: str, n: int = 2000, work: Path = Path("/tmp/lepton-zoo-hls")) -> HlsCheck:
    import hls4ml
    import tensorflow as tf

    zm = get(name)
    model = zm.load_keras("float64")
    last = model.layers[-1]
    ends_in_softmax = last.get_config().get("activation") == "softmax" and last.__class__.__name__ == "Activation"
    compared = model.layers[-2].name if ends_in_softmax else last.name

    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    if ends_in_softmax:
        config["LayerName"][compared]["Trace"] = True
    hls_model = hls4ml.converters.convert_from_keras_model(
        model, hls_config=config, backend="Vitis", io_type="io_parallel", output_dir=str(work / name)
    )
    hls_model.compile()

    x = grid_inputs(name, n)
    if ends_in_softmax:
        y_hls, trace = hls_model.trace(np.ascontiguousarray(x))
        got = trace[compared]
    else:  # hls4ml may fold a final quantizer into the layer before it: compare the model's output
        y_hls = got = hls_model.predict(np.ascontiguousarray(x))
    y_ref = tf.keras.Model(model.input, model.get_layer(compared).output).predict(x, verbose=0, batch_size=1024)
    got = np.asarray(got, dtype=np.float64).reshape(y_ref.shape)
    diff = np.abs(got - y_ref).reshape(len(x), -1)
    argmax = None
    if zm.task == "classifier":
        argmax = float((np.asarray(y_hls).reshape(len(x), -1).argmax(1) == model.predict(x, verbose=0).argmax(1)).mean())
    return HlsCheck(
        name=name,
        n=len(x),
        compared_layer=compared,
        identical_rows=float((diff.max(axis=1) == 0).mean()),
        max_abs_diff=float(diff.max()),
        argmax_agreement=argmax,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lepton_hls.zoo.check_hls", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=names("edge"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lepton-zoo-hls"))
    args = parser.parse_args(argv)
    results = [check(name, args.n, args.work) for name in args.names]
    print(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.identical_rows == 1.0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
