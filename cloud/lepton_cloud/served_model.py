"""Which model the cloud server runs: the package's own (Q)Keras model, or another one given with
`lepton-hls cloud DIR --model MODEL` (the bigger partner of a Big/LITTLE cascade, say), which must fit the
package's contract: the gateway sends the cloud the package's raw features and reads its answer as the
package's output, so the per-sample input and output shapes have to be the package's. Imports TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lepton_host.errors import LeptonError
from lepton_host.manifest import Manifest, Preprocessing

ZOO_PREFIX = "zoo:"


class ModelLoadError(LeptonError):
    """The package's original model could not be loaded into TensorFlow."""


class CloudModelMismatch(LeptonError):
    """The model given to the cloud server does not fit the package it serves for (shapes, class count)."""


class CloudModelLoadError(LeptonError):
    """The model given to the cloud server cannot be loaded."""


@dataclass(frozen=True)
class ModelChoice:
    """`--model` and its companions; None fields fall back to the zoo entry's, then to the package's."""

    source: str  # a Keras .h5, an architecture .json, a SavedModel directory, or "zoo:NAME"
    weights: str | None = None  # for a .json (default: keras_io's sibling files)
    classes: tuple[str, ...] | None = None
    preprocessing: Preprocessing | None = None


@dataclass
class ServedModel:
    """A loaded model as the server calls it: float32 model inputs (N, ...) -> its output tensor."""

    call: Callable
    input_shape: tuple[int | None, ...]  # per sample, as the model declares it (None: any size)
    output_shape: tuple[int | None, ...]
    preprocessing: Preprocessing  # raw features -> model inputs
    classes: tuple[str, ...]  # a classifier's class order; () for other models
    source: str  # what was loaded, for messages
    platform: str  # the OIP metadata's platform


def load_served_model(package_dir: str | os.PathLike, manifest: Manifest, choice: ModelChoice | None = None):
    """The package's own model (choice None) or the chosen one, checked against the package's shapes."""
    if choice is None:
        model = load_keras_model(package_dir)
        served = _from_keras(model, manifest.preprocessing, tuple(manifest.model.classes), "the package's model")
    else:
        served = _load_choice(choice, manifest)
    check_fits(served, manifest, package_dir)
    return served


def load_keras_model(package_dir: str | os.PathLike):
    """The package's original model (model/model.json + model/weights.h5, or a whole-model model/model.h5),
    read by the same loader the build uses (QKeras layers, quantizers given as objects)."""
    from lepton_hls import keras_io

    root = Path(package_dir) / "model"
    if (root / "model.json").is_file():
        if not (root / "weights.h5").is_file():
            raise ModelLoadError(f"{root}: model.json without weights.h5; rebuild the package")
        files = keras_io.ModelFiles(name=root.parent.name, source=str(root / "model.json"),
                                    architecture_json=(root / "model.json").read_text(),
                                    weights_path=root / "weights.h5")
    elif (root / "model.h5").is_file():
        files = keras_io.resolve_files(root / "model.h5")
    else:
        raise ModelLoadError(f"{root}: no model.json/weights.h5 or model.h5; the package lacks its original model")
    try:
        return keras_io.load_keras(files)
    except keras_io.ModelLoadError as e:
        raise ModelLoadError(f"{root}: cannot load the original model into TensorFlow: {e}") from None


def check_fits(served: ServedModel, manifest: Manifest, package_dir) -> None:
    """CloudModelMismatch naming what differs from the package (per-sample shapes, number of classes)."""
    differences = []
    for what, theirs, mine in (("input shape", served.input_shape, tuple(manifest.input.shape)),
                               ("output shape", served.output_shape, tuple(manifest.output.shape))):
        if len(theirs) != len(mine) or any(t is not None and t != m for t, m in zip(theirs, mine)):
            differences.append(f"{what} {tuple(theirs)} vs the package's {mine}")
    size = served.output_shape[-1] if len(served.output_shape) == 1 else None
    if not differences and served.classes and size is not None and len(served.classes) != size:
        differences.append(f"{len(served.classes)} classes named for an output of {size} values")
    if differences:
        raise CloudModelMismatch(f"{served.source} does not fit the package {package_dir} "
                                 f"({manifest.model.name}): {'; '.join(differences)}")


def _load_choice(choice: ModelChoice, manifest: Manifest) -> ServedModel:
    preprocessing, classes = choice.preprocessing, choice.classes
    if choice.weights and (choice.source.startswith(ZOO_PREFIX) or Path(choice.source).is_dir()):
        raise CloudModelLoadError(f"--weights applies to an architecture .json only, not to {choice.source}")
    if choice.source.startswith(ZOO_PREFIX):
        from lepton_hls import zoo

        entry = zoo.get(choice.source[len(ZOO_PREFIX):])
        model = entry.load_keras()
        return _from_keras(model, preprocessing or entry.preprocessing,
                           entry.classes if classes is None else classes, choice.source)
    preprocessing = preprocessing or manifest.preprocessing
    classes = tuple(manifest.model.classes) if classes is None else classes
    path = Path(choice.source)
    if path.is_dir():
        return _from_saved_model(path, manifest, preprocessing, classes)
    from lepton_hls import keras_io

    files = keras_io.resolve_files(path, choice.weights)  # .json + weights (given or beside it), or a whole .h5
    try:
        model = keras_io.load_keras(files)
    except keras_io.ModelLoadError as e:
        raise CloudModelLoadError(f"cannot load {choice.source}: {e}") from None
    return _from_keras(model, preprocessing, classes, choice.source)


def _from_keras(model, preprocessing: Preprocessing, classes, source: str) -> ServedModel:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise CloudModelMismatch(f"{source} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; the "
                                 "cloud serves models of one input and one output, like the package's")
    return ServedModel(lambda x: model(x, training=False), tuple(model.input_shape[1:]),
                       tuple(model.output_shape[1:]), preprocessing, tuple(classes), source, "tensorflow_keras")


def _from_saved_model(path: Path, manifest: Manifest, preprocessing: Preprocessing, classes) -> ServedModel:
    """A Keras SavedModel as a Keras model (its QKeras layers too); any other through its serving signature."""
    import tensorflow as tf

    from lepton_hls import keras_io

    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        raise CloudModelLoadError(f"{path} is a directory but not a TensorFlow SavedModel (no saved_model.pb)")
    try:
        if (path / "keras_metadata.pb").is_file():
            model = tf.keras.models.load_model(str(path), custom_objects=keras_io.custom_objects(), compile=False)
            return _from_keras(model, preprocessing, classes, str(path))
        loaded = tf.saved_model.load(str(path))
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise CloudModelLoadError(f"cannot load the SavedModel {path}: {str(e).splitlines()[0]}") from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise CloudModelLoadError(f"the SavedModel {path} has no serving_default signature to call")
    _, inputs = signature.structured_input_signature
    outputs = signature.structured_outputs
    if len(inputs) != 1:
        raise CloudModelMismatch(f"the SavedModel {path} takes {len(inputs)} inputs ({', '.join(inputs)}); the "
                                 "cloud serves models of one input, like the package's")
    (in_name, in_spec), = inputs.items()
    out_name = manifest.output.name if manifest.output.name in outputs else None
    if out_name is None and len(outputs) != 1:
        raise CloudModelMismatch(f"the SavedModel {path} has outputs {', '.join(outputs)} and none is named "
                                 f"{manifest.output.name!r} like the package's")
    out_name = out_name or next(iter(outputs))

    def call(x):
        return signature(**{in_name: x})[out_name]

    call.keep_alive = loaded  # the signature's variables live as long as the loaded object
    return ServedModel(call, tuple(in_spec.shape.as_list()[1:]), tuple(outputs[out_name].shape.as_list()[1:]),
                       preprocessing, tuple(classes), str(path), "tensorflow_savedmodel")
