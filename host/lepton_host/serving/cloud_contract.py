"""What the gateway expects of the cloud model, and the check of what the cloud says it serves.

The gateway sends the cloud the same raw features it takes, and treats the cloud's answer as an answer of the
package's model: same per-sample input shape, same per-sample output shape and, for a classifier, the same class
order. A cloud model that differs would answer every escalated sample wrongly, so the difference is named before
any answer is trusted. The cloud's side comes from its OIP model metadata (`GET /v2/models/{m}`): the shapes of
its tensors, and the class order where the server states it (the output tensor's `parameters.classes`, a JSON
array of strings, as lepton-hls servers do; Triton, KServe and MLServer state none). Board side: no TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import ServingError

# The output tensor's metadata parameter naming a classifier's class order (KServe v2 parameter values are
# strings, numbers or booleans, so the list travels as a JSON text).
CLASSES_PARAMETER = "classes"
SHOWN_CLASSES = 12  # longer class lists are cut in messages


class CloudContractError(ServingError):
    """The cloud model does not match the package (shapes or class order): its answers would be wrong."""

    status = 502

    def __init__(self, model: str, differences: list[str], where: str = ""):
        self.model, self.differences, self.where = model, list(differences), where
        at = f" at {where}" if where else ""
        super().__init__(f"the cloud model {model!r}{at} does not match the package: {'; '.join(differences)}")

    def at(self, where: str) -> CloudContractError:
        """The same error naming where the cloud is (for the operator; never in an answer to a caller)."""
        return CloudContractError(self.model, self.differences, where)


class UnreadableMetadata(ValueError):
    """The model metadata is not the OIP shape (no tensor list, shapes not lists of integers)."""


@dataclass(frozen=True)
class ModelContract:
    """Per-sample shapes (no batch dimension) and a classifier's class order; None where a server does not say.
    A -1 in a cloud's shape is a dimension it takes at any size."""

    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    classes: tuple[str, ...] | None = None
    input_name: str | None = None
    output_name: str | None = None

    @classmethod
    def from_manifest(cls, manifest) -> ModelContract:
        return cls(tuple(manifest.input.shape), tuple(manifest.output.shape),
                   tuple(manifest.model.classes) or None, manifest.input.name, manifest.output.name)

    @classmethod
    def from_metadata(cls, meta, input_name: str | None = None, output_name: str | None = None) -> ModelContract:
        """From OIP model metadata; the tensors named `input_name`/`output_name` when present, else the first."""
        if not isinstance(meta, dict):
            raise UnreadableMetadata("the model metadata is not a JSON object")
        inp = _pick(meta.get("inputs"), input_name, "inputs")
        out = _pick(meta.get("outputs"), output_name, "outputs")
        return cls(
            input_shape=None if inp is None else _per_sample(inp, "inputs"),
            output_shape=None if out is None else _per_sample(out, "outputs"),
            classes=None if out is None else _classes(out),
            input_name=None if inp is None else str(inp.get("name", "")),
            output_name=None if out is None else str(out.get("name", "")),
        )


def compare(expected: ModelContract, cloud: ModelContract) -> tuple[list[str], list[str]]:
    """-> (what differs, what the cloud does not state and so could not be compared)."""
    differences: list[str] = []
    unchecked: list[str] = []
    for what, mine, theirs in (("input shape", expected.input_shape, cloud.input_shape),
                               ("output shape", expected.output_shape, cloud.output_shape)):
        if mine is None:
            continue
        if theirs is None:
            unchecked.append(what)
        elif not _shape_fits(theirs, mine):
            differences.append(f"{what} {_shape(theirs)} vs the package's {_shape(mine)}")
    if expected.classes is not None:
        if cloud.classes is None:
            unchecked.append("class order")
        elif len(cloud.classes) != len(expected.classes):
            differences.append(f"{len(cloud.classes)} classes ({_names(cloud.classes)}) vs the package's "
                               f"{len(expected.classes)} ({_names(expected.classes)})")
        elif cloud.classes != expected.classes:
            differences.append(f"class order ({_names(cloud.classes)}) vs the package's ({_names(expected.classes)})")
    return differences, unchecked


def check(expected: ModelContract, cloud: ModelContract, model: str) -> list[str]:
    """Raise CloudContractError when the cloud model differs; return one note per thing it does not state."""
    differences, unchecked = compare(expected, cloud)
    if differences:
        raise CloudContractError(model, differences)
    return [unchecked_note(model, what, expected) for what in unchecked]


def unchecked_note(model: str, what: str, expected: ModelContract) -> str:
    if what == "class order":
        return (f"the cloud model {model!r} does not state its class order; its answers are read in the package's "
                f"({_names(expected.classes or ())})")
    return f"the cloud model {model!r} does not state its {what}; not compared"


def classes_parameter(classes) -> dict:
    """The output tensor metadata's `parameters` stating a class order ({} without classes)."""
    return {CLASSES_PARAMETER: json.dumps(list(classes))} if classes else {}


# ---- reading metadata --------------------------------------------------------------------------------------


def _pick(tensors, name: str | None, where: str) -> dict | None:
    if tensors is None or tensors == []:
        return None  # not stated (MLServer states no outputs unless configured)
    if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
        raise UnreadableMetadata(f"the model metadata's {where} is not a list of tensors")
    named = [t for t in tensors if name is not None and t.get("name") == name]
    return (named or tensors)[0]


def _per_sample(tensor: dict, where: str) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise UnreadableMetadata(f"the model metadata's {where} shape {shape!r} is not a list of integers")
    return tuple(shape[1:]) if shape and shape[0] == -1 else tuple(shape)


def _classes(tensor: dict) -> tuple[str, ...] | None:
    params = tensor.get("parameters")
    value = params.get(CLASSES_PARAMETER) if isinstance(params, dict) else None
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise UnreadableMetadata(f"the output's parameters.classes is not a JSON array: {value[:80]!r}") from None
    if not isinstance(value, list):
        raise UnreadableMetadata("the output's parameters.classes is not a JSON array")
    return tuple(str(c) for c in value)


def _shape_fits(theirs: tuple[int, ...], mine: tuple[int, ...]) -> bool:
    return len(theirs) == len(mine) and all(t == -1 or t == m for t, m in zip(theirs, mine))


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


def _names(classes) -> str:
    shown = ", ".join(classes[:SHOWN_CLASSES])
    return shown + (", ..." if len(classes) > SHOWN_CLASSES else "")
