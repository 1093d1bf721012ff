"""What an exported ONNX file says about itself, so a server can serve it with nothing else at hand: the served
model name, the input and output tensors (the package's names, per-sample shapes) and a classifier's class
order, kept in the ONNX model's metadata properties (string key -> string value, as the ONNX format allows).

The exporter (onnx_export.py, TensorFlow side) writes them; the Ray Serve tier (lepton_cloud_ray, no TensorFlow)
and the tests read them back through onnxruntime. numpy-free and TensorFlow-free on purpose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lepton_host.errors import LeptonError

PREFIX = "lepton."
KEYS = ("model_name", "input_name", "input_shape", "output_name", "output_shape", "classes", "source",
        "preprocessing")


class OnnxContractError(LeptonError):
    """The ONNX file does not say what it serves, or says something that does not fit the package."""


@dataclass(frozen=True)
class OnnxContract:
    model_name: str  # the name the model is served under (the package's, so the gateway finds it)
    input_name: str
    input_shape: tuple[int, ...]  # per sample, raw features (the preprocessing is inside the graph)
    output_name: str
    output_shape: tuple[int, ...]
    classes: tuple[str, ...] = ()
    source: str = ""  # which model was exported (for messages and metadata)
    preprocessing: str = ""  # the folded-in preprocessing, as JSON text (for the record)

    def to_metadata(self) -> dict[str, str]:
        values = {
            "model_name": self.model_name, "input_name": self.input_name,
            "input_shape": json.dumps(list(self.input_shape)), "output_name": self.output_name,
            "output_shape": json.dumps(list(self.output_shape)), "classes": json.dumps(list(self.classes)),
            "source": self.source, "preprocessing": self.preprocessing,
        }
        return {PREFIX + k: v for k, v in values.items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], where: str) -> OnnxContract:
        missing = [PREFIX + k for k in KEYS[:5] if PREFIX + k not in metadata]
        if missing:
            raise OnnxContractError(f"{where} lacks the metadata {', '.join(missing)}: it was not written by "
                                    "`lepton-hls export-onnx`; export the model with it")
        try:
            return cls(
                model_name=metadata[PREFIX + "model_name"], input_name=metadata[PREFIX + "input_name"],
                input_shape=_shape(metadata[PREFIX + "input_shape"]), output_name=metadata[PREFIX + "output_name"],
                output_shape=_shape(metadata[PREFIX + "output_shape"]),
                classes=tuple(str(c) for c in json.loads(metadata.get(PREFIX + "classes", "[]"))),
                source=metadata.get(PREFIX + "source", ""), preprocessing=metadata.get(PREFIX + "preprocessing", ""),
            )
        except (ValueError, TypeError) as e:
            raise OnnxContractError(f"{where}: unreadable lepton metadata ({e}); export the model again") from None

    def differences(self, manifest) -> list[str]:
        """What differs from a package's manifest (served name, tensor names, per-sample shapes, class order)."""
        diffs = []
        for what, mine, theirs in (("model name", self.model_name, manifest.model.name),
                                   ("input name", self.input_name, manifest.input.name),
                                   ("input shape", self.input_shape, tuple(manifest.input.shape)),
                                   ("output name", self.output_name, manifest.output.name),
                                   ("output shape", self.output_shape, tuple(manifest.output.shape))):
            if mine != theirs:
                diffs.append(f"{what} {mine!r} vs the package's {theirs!r}")
        if manifest.model.classes and self.classes and tuple(self.classes) != tuple(manifest.model.classes):
            diffs.append(f"class order {list(self.classes)} vs the package's {list(manifest.model.classes)}")
        return diffs


def read_contract(session, where: str) -> OnnxContract:
    """The contract of an onnxruntime.InferenceSession, checked against the graph's own tensors."""
    contract = OnnxContract.from_metadata(dict(session.get_modelmeta().custom_metadata_map), where)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    graph_in = {t.name: t.shape for t in inputs}
    graph_out = {t.name: t.shape for t in outputs}
    if len(inputs) != 1 or contract.input_name not in graph_in:
        raise OnnxContractError(f"{where}: the graph's inputs {list(graph_in)} are not the one input "
                                f"{contract.input_name!r} its metadata names")
    if contract.output_name not in graph_out:
        raise OnnxContractError(f"{where}: the graph has no output {contract.output_name!r} (it has "
                                f"{list(graph_out)})")
    for name, shape, per_sample in ((contract.input_name, graph_in[contract.input_name], contract.input_shape),
                                    (contract.output_name, graph_out[contract.output_name], contract.output_shape)):
        fixed = tuple(shape[1:])
        if len(fixed) != len(per_sample) or any(isinstance(d, int) and d != p for d, p in zip(fixed, per_sample)):
            raise OnnxContractError(f"{where}: tensor {name!r} has shape {list(shape)} in the graph but "
                                    f"{list(per_sample)} per sample in its metadata")
    return contract


def _shape(text: str) -> tuple[int, ...]:
    shape = json.loads(text)
    if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"shape {text!r} is not a list of positive integers")
    return tuple(shape)
