"""Reading a user's (Q)Keras model: architecture `.json` + weights `.h5`, or a full-model `.h5`.

Also builds the float64 twin of a model: the exact reference the C simulation is compared against, because
float32 cannot hold the 20-30 bit accumulations of a quantized layer exactly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lepton_host.errors import LeptonError


class ModelLoadError(LeptonError):
    """The model files are missing, unreadable, or the weights do not fit the architecture."""


class UnsupportedLayerError(LeptonError):
    """The model uses a layer the compile flow cannot turn into hardware."""


@dataclass(frozen=True)
class ModelFiles:
    """A model as files on disk: the architecture as JSON text and the weights file."""

    name: str
    source: str
    architecture_json: str
    weights_path: Path

    @property
    def sha256(self) -> str:
        h = hashlib.sha256(self.architecture_json.encode())
        h.update(self.weights_path.read_bytes())
        return h.hexdigest()


def custom_objects() -> dict:
    from .compat.qkeras import supported_quantized_objects

    return supported_quantized_objects()


def resolve_files(model: str | Path, weights: str | Path | None = None) -> ModelFiles:
    """MODEL is a `.json` (weights from --weights or `<stem>_weights.h5` / `<stem>.h5` beside it) or a full `.h5`."""
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist")
    if path.suffix == ".json":
        weights_path = Path(weights) if weights else _sibling_weights(path)
        if weights_path is None:
            raise ModelLoadError(
                f"no weights for {path}: pass --weights FILE.h5 (looked for {path.stem}_weights.h5 and {path.stem}.h5)"
            )
        if not weights_path.is_file():
            raise ModelLoadError(f"weights file {weights_path} does not exist")
        try:
            arch = path.read_text()
            json.loads(arch)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{path} is not a Keras architecture JSON file: {e}") from None
        return ModelFiles(name=path.stem, source=str(path), architecture_json=arch, weights_path=weights_path)
    if path.suffix in (".h5", ".hdf5", ".keras"):
        if weights:
            raise ModelLoadError(f"{path} is a full-model file; --weights applies only to a .json architecture")
        arch = _architecture_from_h5(path)
        return ModelFiles(name=path.stem, source=str(path), architecture_json=arch, weights_path=path)
    raise ModelLoadError(f"cannot read model {path}: expected a zoo name, an architecture .json, or a full-model .h5")


def load_keras(files: ModelFiles, dtype: str = "float32"):
    """Instantiate the Keras model with its weights; dtype='float64' builds the exact reference twin."""
    import tensorflow as tf

    if dtype not in ("float32", "float64"):
        raise ModelLoadError(f"dtype must be float32 or float64, got {dtype!r}")
    arch = _softmax_layers_as_activations(_quantizers_as_strings(json.loads(files.architecture_json)))
    if dtype == "float64":
        from . import float64

        float64.install()
        arch = _with_dtype(arch, "float64")
    try:
        model = tf.keras.models.model_from_json(json.dumps(arch), custom_objects=custom_objects())
    except (ValueError, TypeError, KeyError) as e:
        raise ModelLoadError(f"{files.source}: {_failing_layer(arch) or str(e).splitlines()[0]}") from None
    try:
        model.load_weights(str(files.weights_path))
    except (ValueError, OSError, KeyError) as e:
        raise ModelLoadError(
            f"weights {files.weights_path} do not fit the architecture of {files.source}: {str(e).splitlines()[0]}"
        ) from None
    return model


def _quantizers_as_strings(arch: dict) -> dict:
    """QActivation's quantizer given as an object is saved by to_json() as its serialized config, which
    QActivation.__init__ does not rebuild (it keeps the dict). Its string form rebuilds the same quantizer, so use
    that wherever the round trip gives back the same config; anything else is left for _failing_layer to name."""
    from qkeras.quantizers import get_quantizer

    for layer in architecture_layers(arch):
        config = layer.get("config", {})
        act = config.get("activation")
        if layer.get("class_name") != "QActivation" or not isinstance(act, dict):
            continue
        try:
            quantizer = get_quantizer({"class_name": act.get("class_name"), "config": act.get("config", {})})
        except Exception:  # qkeras raises bare exceptions and ValueErrors for unknown quantizers  # noqa: BLE001
            continue
        # str() drops some settings (negative_slope prints where use_sigmoid is read): keywords as the fallback,
        # without the None defaults, which qkeras' string parser does not read back as None
        keywords = ",".join(f"{k}={v!r}" for k, v in sorted(act.get("config", {}).items()) if v is not None)
        for text in (str(quantizer), f"{act.get('class_name')}({keywords})"):
            try:
                same = get_quantizer(text).get_config() == quantizer.get_config()
            except Exception:  # noqa: BLE001
                same = False
            if same:
                config["activation"] = text
                break
    return arch


def _failing_layer(arch: dict) -> str | None:
    """A one-line description of the first layer Keras cannot rebuild from its config, or None."""
    import tensorflow as tf

    for layer in architecture_layers(arch):
        if layer.get("class_name") == "InputLayer":
            continue
        # QActivation accepts a dict without complaint and only the model-level check fails on it
        ok = not (layer.get("class_name") == "QActivation" and isinstance(layer.get("config", {}).get("activation"), dict))
        if ok:
            try:
                tf.keras.layers.deserialize(
                    {"class_name": layer.get("class_name"), "config": layer.get("config", {})},
                    custom_objects=custom_objects(),
                )
            except Exception:  # Keras raises ValueError, TypeError, KeyError and its own errors here  # noqa: BLE001
                ok = False
        if not ok:
            name = layer.get("config", {}).get("name", layer.get("name", "?"))
            return (
                f"layer {name!r} ({layer.get('class_name')}) cannot be rebuilt from its JSON config; give QActivation "
                "quantizers as strings in .json (QActivation('quantized_relu(8,3)')), or use the full .h5"
            )
    return None


def _softmax_layers_as_activations(arch: dict) -> dict:
    """A Keras `Softmax()` layer (last axis) as the same `Activation("softmax")`: hls4ml 1.3.0 names the
    former's C++ config struct `Softmax_config<n>` but calls `softmax_config<n>`, so it does not compile."""
    for layer in architecture_layers(arch):
        cfg = layer.get("config", {}) or {}
        if layer.get("class_name") == "Softmax" and cfg.get("axis", -1) in (-1, [-1]):
            layer["class_name"] = "Activation"
            layer["config"] = {k: v for k, v in cfg.items() if k in ("name", "trainable", "dtype")}
            layer["config"]["activation"] = "softmax"
    return arch


def layer_outputs(model, x) -> dict:
    """Every layer's output by layer name, for the per-layer comparison with the C simulation's trace."""
    import tensorflow as tf

    layers = [l for l in model.layers if not isinstance(l, tf.keras.layers.InputLayer)]
    probe = tf.keras.Model(model.inputs, [l.output for l in layers])
    outs = probe.predict(x, verbose=0)
    if not isinstance(outs, list):
        outs = [outs]
    return {l.name: np.asarray(o) for l, o in zip(layers, outs)}


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


def _sibling_weights(path: Path) -> Path | None:
    for cand in (path.with_name(path.stem + "_weights.h5"), path.with_suffix(".h5")):
        if cand.is_file():
            return cand
    return None


def _architecture_from_h5(path: Path) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
    except OSError as e:
        raise ModelLoadError(f"{path} is not a readable HDF5 model file: {e}") from None
    if config is None:
        raise ModelLoadError(
            f"{path} holds weights only (no model_config); pass the architecture .json as MODEL and this file as --weights"
        )
    return config.decode() if isinstance(config, bytes) else str(config)


def check_supported(files: ModelFiles) -> None:
    """Name every layer hls4ml cannot convert, before spending time on the conversion."""
    from hls4ml.converters.keras_v2_to_hls import get_supported_keras_layers

    layers = architecture_layers(json.loads(files.architecture_json))
    supported = set(get_supported_keras_layers()) | {"Dropout"}  # hls4ml drops Dropout: inference is unaffected
    bad = sorted({l.get("class_name") for l in layers} - supported - {"InputLayer"})
    if bad:
        raise UnsupportedLayerError(
            f"{files.source}: layer type(s) {', '.join(bad)} cannot be compiled to hardware. Supported: "
            f"{', '.join(sorted(supported))}"
        )


def architecture_layers(arch: dict) -> list:
    """The layer list of a Keras architecture; Keras 2.0's Sequential format keeps it directly under "config"."""
    config = arch.get("config", {})
    return config if isinstance(config, list) else config.get("layers", [])
