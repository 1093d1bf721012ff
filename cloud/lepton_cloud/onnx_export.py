"""Export the cloud model to ONNX, for servers that scale out without TensorFlow (Triton's onnxruntime backend,
the Ray Serve tier in lepton_cloud_ray).

The model is the one `lepton-hls cloud DIR [--model MODEL]` serves (served_model.py loads it and checks that it
fits the package). The exported graph takes the same RAW features as the gateway under the package's input
name: the preprocessing ((x - mean) / scale) is folded into the graph, so every server of the file, and every
client, sends what the gateway sends. Its output carries the package's output name, its batch dimension is
free, and its metadata states the contract (onnx_contract.py).

Every export is checked before it is written: onnxruntime's answers on real inputs (the zoo's held-out data
where the model or package comes from the zoo, else inputs spread like the model's training inputs) against
TensorFlow's, the answers the reference cloud server gives. Imports TensorFlow and tf2onnx.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lepton_host.errors import LeptonError
from lepton_host.manifest import Manifest, Preprocessing, load_manifest

from .onnx_contract import OnnxContract
from .served_model import ZOO_PREFIX, ModelChoice, ServedModel, load_served_model

OPSET = 17  # onnxruntime >= 1.13 runs it; Triton's onnxruntime backend has since 22.11
BATCH_DIM = "batch"
CHECK_SAMPLES = 256
# onnxruntime and TensorFlow sum in different orders; float32 answers agree to a few ulps of the largest value
TOLERANCE = 1e-4


class OnnxExportError(LeptonError):
    """The model could not be converted to ONNX or written."""


class OnnxNumericsError(LeptonError):
    """The ONNX graph answers differently from the TensorFlow model it was converted from."""


@dataclass(frozen=True)
class NumericsCheck:
    """onnxruntime against TensorFlow on the same raw inputs."""

    samples: int
    data: str  # what the inputs were
    max_abs_diff: float
    argmax_agreement: float | None  # classifiers only
    max_abs_value: float = 1.0  # the largest |TensorFlow answer|: the scale the difference is judged against

    @property
    def limit(self) -> float:
        return TOLERANCE * max(1.0, self.max_abs_value)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.limit

    def summary(self) -> str:
        argmax = "" if self.argmax_agreement is None else f", argmax agreement {self.argmax_agreement:.4f}"
        return f"onnxruntime vs TensorFlow on {self.data}: max |diff| {self.max_abs_diff:.3g}{argmax}"


@dataclass(frozen=True)
class OnnxModel:
    """An exported model in memory: the serialized ONNX file and what it states about itself."""

    data: bytes
    contract: OnnxContract
    opset: int
    check: NumericsCheck


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    model: OnnxModel


def export_onnx(package_dir: str | os.PathLike, out_path: str | os.PathLike, choice: ModelChoice | None = None,
                opset: int = OPSET, overwrite: bool = False) -> OnnxExport:
    """Write the package's cloud model (its own, or `choice`) to `out_path` as ONNX, checked first."""
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise OnnxExportError(f"{out} exists; pass --overwrite to replace it")
    model = convert(package_dir, choice, opset)
    write_atomically(out, model.data)
    return OnnxExport(out, model)


def convert(package_dir: str | os.PathLike, choice: ModelChoice | None = None, opset: int = OPSET,
            manifest: Manifest | None = None) -> OnnxModel:
    """The model as served for the package, converted to ONNX (preprocessing inside) and checked."""
    missing = [m for m in ("tf2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise OnnxExportError(f"ONNX export needs {', '.join(missing)}, not installed here; install the build "
                              "environment's pins: pip install -r requirements.lock")
    manifest = manifest or load_manifest(package_dir)
    served = load_served_model(package_dir, manifest, choice)
    contract = OnnxContract(
        model_name=manifest.model.name, input_name=manifest.input.name, input_shape=tuple(manifest.input.shape),
        output_name=manifest.output.name, output_shape=tuple(manifest.output.shape), classes=tuple(served.classes),
        source=served.source, preprocessing=json.dumps(served.preprocessing.to_dict()),
    )
    proto = _to_onnx(served, contract, opset)
    data = proto.SerializeToString()
    x, described = probe_inputs(manifest, served.preprocessing, choice)
    check = check_numerics(data, served, x, described, classifier=manifest.model.task == "classifier")
    if not check.passed:
        raise OnnxNumericsError(f"the ONNX graph of {served.source} answers differently from TensorFlow "
                                f"({check.summary()}, above {check.limit:.3g}); nothing was written")
    return OnnxModel(data, contract, opset, check)


def tf_answers(served: ServedModel, x: np.ndarray) -> np.ndarray:
    """What the reference cloud server answers for raw features x (server.KerasModel's arithmetic)."""
    return np.asarray(served.call(served.preprocessing.apply(x).astype(np.float32)), dtype=np.float32)


def check_numerics(onnx_data: bytes, served: ServedModel, x: np.ndarray, described: str,
                   classifier: bool = True) -> NumericsCheck:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_data, providers=["CPUExecutionProvider"])
    y_onnx = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
    y_tf = tf_answers(served, x)
    agreement = None
    if classifier and y_tf.ndim == 2 and y_tf.shape[1] > 1:
        agreement = float((y_onnx.argmax(axis=1) == y_tf.argmax(axis=1)).mean())
    return NumericsCheck(len(x), described, float(np.abs(y_onnx - y_tf).max()), agreement,
                         float(np.abs(y_tf).max()))


def probe_inputs(manifest: Manifest, preprocessing: Preprocessing, choice: ModelChoice | None,
                 n: int = CHECK_SAMPLES) -> tuple[np.ndarray, str]:
    """Raw inputs to compare on: the zoo's held-out data when the served model or the package is a zoo model of
    the package's input shape; else inputs whose preprocessed values are standard normal (how models are fed)."""
    from lepton_hls import zoo

    for source in (choice.source if choice else None, manifest.model.source):
        if not source or not source.startswith(ZOO_PREFIX):
            continue
        try:
            entry = zoo.get(source[len(ZOO_PREFIX):])
        except zoo.ZooError:
            continue
        data = entry.eval_data(n) if entry.input_shape == tuple(manifest.input.shape) else None
        if data is not None:
            return np.asarray(data[0], np.float32), f"{len(data[0])} held-out samples of {source}"
    z = np.random.default_rng(0).normal(size=(n, *manifest.input.shape))
    if preprocessing.kind == "standard":
        z = z * np.asarray(preprocessing.scale) + np.asarray(preprocessing.mean)
    return z.astype(np.float32), f"{n} random samples (standard normal after preprocessing)"


def write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        raise OnnxExportError(f"cannot write {path}: {e}") from None


# ---- conversion -------------------------------------------------------------------------------------------


def _to_onnx(served: ServedModel, contract: OnnxContract, opset: int):
    import onnx
    import tensorflow as tf
    import tf2onnx
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    pre = served.preprocessing
    mean = np.asarray(pre.mean if pre.kind == "standard" else 0.0, np.float32)
    scale = np.asarray(pre.scale if pre.kind == "standard" else 1.0, np.float32)
    spec = [tf.TensorSpec([None, *contract.input_shape], tf.float32, name=contract.input_name)]

    @tf.function(input_signature=spec)
    def raw_features_to_output(x):
        return tf.cast(served.call((x - mean) / scale), tf.float32)

    try:
        proto, _ = tf2onnx.convert.from_function(raw_features_to_output, input_signature=spec, opset=opset)
    except ValueError as e:  # a preprocessing that does not broadcast over the input shape fails while tracing
        raise OnnxExportError(f"cannot trace {served.source} with its preprocessing for input shape "
                              f"{contract.input_shape}: {str(e).splitlines()[0]}") from None
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise OnnxExportError(f"the ONNX graph of {served.source} has {len(graph.input)} inputs and "
                              f"{len(graph.output)} outputs; one of each was expected")
    _rename(graph, graph.input[0].name, contract.input_name)
    _rename(graph, graph.output[0].name, contract.output_name)
    for value in (graph.input[0], graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_DIM
    graph.name = contract.model_name
    proto.doc_string = (f"{contract.source} for the package model {contract.model_name}: raw features in "
                        "(preprocessing inside the graph)")
    del proto.metadata_props[:]
    for key, value in contract.to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise OnnxExportError(f"the ONNX graph of {served.source} is invalid: {str(e).splitlines()[0]}") from None
    return proto


def _rename(graph, old: str, new: str) -> None:
    """Rename a graph tensor everywhere it appears (tf2onnx names outputs after TensorFlow's Identity ops)."""
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*graph.input, *graph.output):
        if value.name == old:
            value.name = new
