"""Reading and writing QKeras models as a Keras JSON architecture plus an HDF5 weights file."""

from __future__ import annotations

import json
from pathlib import Path


def load_qkeras(json_path: str | Path, weights_path: str | Path, dtype: str = "float32"):
    """Build the model from its JSON with every layer in `dtype`, then load the weights."""
    from ..keras_io import ModelFiles, load_keras

    json_path = Path(json_path)
    files = ModelFiles(name=json_path.stem, source=str(json_path), architecture_json=json_path.read_text(),
                       weights_path=Path(weights_path))
    return load_keras(files, dtype)


def save_qkeras(model, json_path: str | Path, weights_path: str | Path) -> None:
    Path(json_path).write_text(json.dumps(json.loads(model.to_json()), indent=1) + "\n")
    model.save_weights(str(weights_path))
