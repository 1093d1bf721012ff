"""The model zoo: small QKeras models that ship inside the package (no downloads, ever).

    >>> from lepton_hls import zoo
    >>> zoo.names()
    ['anomaly_ae', 'cancer_cloud', 'cancer_mlp', 'digits_cloud', 'digits_cnn', 'jet_tagger']
    >>> m = zoo.get("digits_cnn"); model = m.load_keras(); x, y = m.eval_data(100)
    >>> m.role, m.partner, zoo.names("edge")
    ('edge', 'digits_cloud', ['anomaly_ae', 'cancer_mlp', 'digits_cnn', 'jet_tagger'])

Edge models (role "edge") are QKeras models built for the FPGA. A cloud model (role "cloud") is a plain float
Keras model, never built for hardware: the stronger partner that answers again the samples its edge model is
unsure about. Partners share input shape, classes and preprocessing, and `partner` names each from the other.

Each entry is a Keras JSON architecture plus an HDF5 weights file in this directory, a preprocessing file
(`<name>_preprocessing.json`, the `lepton_host.manifest.Preprocessing` that turns raw features into model
inputs) and the numbers recorded when it was trained (`metrics.json`). `train.py` regenerates the trained ones.
TensorFlow is imported only inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lepton_host.errors import LeptonError
from lepton_host.manifest import Preprocessing

ZOO_DIR = Path(__file__).resolve().parent
METRICS_FILE = ZOO_DIR / "metrics.json"


class ZooError(LeptonError):
    """A zoo model is unknown or its files are missing from the installed package."""


@dataclass(frozen=True)
class ZooModel:
    name: str
    task: str  # "classifier" | "autoencoder"
    json_path: Path
    weights_path: Path
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    threshold: float | None  # autoencoder: mean squared reconstruction error (model-input domain) above = anomaly
    description: str
    role: str = "edge"  # "edge": QKeras, buildable for the FPGA | "cloud": float Keras, runs on a server
    partner: str | None = None  # the other half of an edge/cloud pair
    metrics: dict = field(default_factory=dict, hash=False)  # recorded at training time, e.g. {"test_accuracy": 0.95}

    def load_keras(self, dtype: str = "float32"):
        """The (Q)Keras model with its weights (a cloud model is plain Keras). dtype="float64" builds every layer in float64: the exact reference
        for fixed-point C simulation (float32 cannot hold the wide accumulations)."""
        from .keras_io import load_qkeras

        return load_qkeras(self.json_path, self.weights_path, dtype=dtype)

    def eval_data(self, n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
        """Raw features (before preprocessing) and labels of real evaluation data, or None when none ships.

        digits_cnn: the held-out test split of scikit-learn's 8x8 digits (pixels 0..16, shape (n, 8, 8, 1)),
        the first n of it; digits_cloud the same. cancer_mlp, cancer_cloud: the held-out split of scikit-learn's
        breast cancer data (30 raw measurements per row, labels 0 malignant, 1 benign), the first n of it.
        anomaly_ae: freshly generated sensor frames, half normal (label 0) and half anomalous (label 1), n in all
        (default 2000), deterministic in `seed`. jet_tagger: None."""
        if self.name in _HELD_OUT_SPLIT:
            x, y = importlib.import_module(f".{_HELD_OUT_SPLIT[self.name]}", __package__).test_split()
            return (x, y) if n is None else (x[:n], y[:n])
        if self.name == "anomaly_ae":
            from .sensor_data import labelled_frames

            return labelled_frames(2000 if n is None else n, seed=seed)
        return None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape, read from the architecture file without TensorFlow."""
        layers = json.loads(self.json_path.read_text())["config"]["layers"]
        shape = layers[0]["config"]["batch_input_shape"]
        return tuple(int(s) for s in shape[1:])


_CATALOGUE = {
    "jet_tagger": dict(
        task="classifier",
        classes=("g", "q", "w", "z", "t"),
        description=(
            "QKeras 16-64-32-32-5 MLP (6-bit weights, quantized_relu(6), softmax) tagging LHC jets as gluon, "
            "light quark, W, Z or top from 16 standardized high-level features; trained and published by the "
            "hls4ml authors (example-models qkeras_3layer). Its data set does not ship."
        ),
    ),
    "digits_cnn": dict(
        task="classifier",
        classes=tuple(str(d) for d in range(10)),
        partner="digits_cloud",
        description=(
            "QKeras CNN on scikit-learn's 8x8 handwritten digits: QConv2D 8x3x3 (6-bit) + quantized_relu(6) + "
            "MaxPooling 2x2 + QDense 10 (6-bit) + softmax. Input: pixels 0..16 divided by 16."
        ),
    ),
    "digits_cloud": dict(
        task="classifier",
        classes=tuple(str(d) for d in range(10)),
        role="cloud",
        partner="digits_cnn",
        description=(
            "Float Keras CNN, digits_cnn's stronger cloud partner on the same 8x8 digits split: two blocks of "
            "Conv2D 3x3 x2 (32, then 64 filters, ReLU) + MaxPooling 2x2 + Dropout, Dense 128 + Dropout, Dense 10 "
            "+ softmax; trained with one-pixel shifts of the training images. Input: pixels 0..16 divided by 16."
        ),
    ),
    "cancer_mlp": dict(
        task="classifier",
        classes=("malignant", "benign"),
        partner="cancer_cloud",
        description=(
            "QKeras MLP 30-8-2 (4-bit weights, quantized_relu(4), softmax) telling malignant from benign breast "
            "tumours from 30 cell-nucleus measurements (scikit-learn's Wisconsin Diagnostic Breast Cancer data), "
            "standard-scaled per feature."
        ),
    ),
    "cancer_cloud": dict(
        task="classifier",
        classes=("malignant", "benign"),
        role="cloud",
        partner="cancer_mlp",
        description=(
            "Float Keras MLP 30-128-64-2 (ReLU, dropout 0.5, L2 weight decay, input noise while training; softmax), "
            "cancer_mlp's stronger cloud partner on the same breast cancer split and preprocessing."
        ),
    ),
    "anomaly_ae": dict(
        task="autoencoder",
        classes=(),
        description=(
            "QKeras dense autoencoder 32-16-8-16-32 (6-bit weights, quantized_relu(8,3); the output is the last "
            "QDense's exact fixed-point sum) "
            "for machine-sensor anomaly detection on 32 log-spectrum features, standard-scaled. A frame is "
            "anomalous when the mean squared error between the scaled input and the output exceeds the threshold."
        ),
    ),
}


# the data module whose test_split() is each model's held-out data
_HELD_OUT_SPLIT = {
    "digits_cnn": "digits",
    "digits_cloud": "digits",
    "cancer_mlp": "cancer_data",
    "cancer_cloud": "cancer_data",
}


def names(role: str | None = None) -> list[str]:
    """Every zoo model's name, or only those of one role ("edge" or "cloud")."""
    if role not in (None, "edge", "cloud"):
        raise ZooError(f"zoo role must be 'edge' or 'cloud', got {role!r}")
    return sorted(n for n, e in _CATALOGUE.items() if role is None or e.get("role", "edge") == role)


def get(name: str) -> ZooModel:
    if name not in _CATALOGUE:
        raise ZooError(f"unknown zoo model {name!r}; the zoo has: {', '.join(names())}")
    entry = _CATALOGUE[name]
    json_path, weights_path = ZOO_DIR / f"{name}.json", ZOO_DIR / f"{name}_weights.h5"
    pre_path = ZOO_DIR / f"{name}_preprocessing.json"
    for p in (json_path, weights_path, pre_path):
        if not p.is_file():
            raise ZooError(
                f"zoo model {name!r}: {p} is missing from the installed package; reinstall lepton-hls or run "
                f"`python -m lepton_hls.zoo.train {name}`"
            )
    recorded = _recorded().get(name, {})
    threshold = recorded.get("threshold")
    return ZooModel(
        name=name,
        task=entry["task"],
        json_path=json_path,
        weights_path=weights_path,
        classes=entry["classes"],
        preprocessing=Preprocessing.from_dict(json.loads(pre_path.read_text()), where=str(pre_path)),
        threshold=None if threshold is None else float(threshold),
        description=entry["description"],
        role=entry.get("role", "edge"),
        partner=entry.get("partner"),
        metrics=dict(recorded.get("metrics", {})),
    )


def _recorded() -> dict:
    if not METRICS_FILE.is_file():
        return {}
    return json.loads(METRICS_FILE.read_text())
