"""Reading and writing QKeras models as a Keras JSON architecture plus an HDF5 weights file."""

from __future__ import annotations

import json
from pathlib import Path

from lepton_host.errors import LeptonError

DTYPES = ("float32", "float64")


def qkeras_custom_objects() -> dict:
    from qkeras.utils import _add_supported_quantized_objects

    objects: dict = {}
    _add_supported_quantized_objects(objects)
    return objects


def load_qkeras(json_path: str | Path, weights_path: str | Path, dtype: str = "float32"):
    """Build the model from its JSON with every layer in `dtype`, then load the weights."""
    if dtype not in DTYPES:
        raise LeptonError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    import tensorflow as tf

    arch = json.loads(Path(json_path).read_text())
    if dtype == "float64":
        from . import float64

        float64.install()
        arch = _with_dtype(arch, "float64")
    model = tf.keras.models.model_from_json(json.dumps(arch), custom_objects=qkeras_custom_objects())
    model.load_weights(str(weights_path))
    return model


def save_qkeras(model, json_path: str | Path, weights_path: str | Path) -> None:
    Path(json_path).write_text(json.dumps(json.loads(model.to_json()), indent=1) + "\n")
    model.save_weights(str(weights_path))


def _with_dtype(node, dtype: str):
    """Every layer's "dtype" field set to `dtype` (policies and plain strings alike)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "dtype" and isinstance(v, str) and v.startswith("float"):
                out[k] = dtype
            elif k == "dtype" and isinstance(v, dict) and v.get("class_name") == "Policy":
                out[k] = {**v, "config": {**v.get("config", {}), "name": dtype}}
            else:
                out[k] = _with_dtype(v, dtype)
        return out
    if isinstance(node, list):
        return [_with_dtype(v, dtype) for v in node]
    return node
