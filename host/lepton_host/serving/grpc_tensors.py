"""The gRPC inference messages (ModelInferRequest, ModelInferResponse) to and from the protocol's own request and
tensors (oip.py), so that one validation and one service answer both surfaces.

Tensor data travels either as raw little-endian bytes, one `raw_input_contents` entry per input in input order (what
Triton's clients send), or in the typed `contents` field of each input (`fp32_contents`, `int_contents`, ...). A
request uses one form for all its inputs. The answer comes back in the form the request used: raw bytes in
`raw_output_contents`, or typed contents (FP16 has no typed field and always travels raw). Request and response
parameters are the protocol's parameters: strings, booleans, integers and doubles.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import BadRequest
from .grpc_stubs import grpc_service_pb2 as pb
from .oip import DATATYPES, InferRequest, RequestedOutput, Tensor

# The typed contents field of each datatype (FP16 has none: raw bytes only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
}


def parameter_value(p: pb.InferParameter):
    choice = p.WhichOneof("parameter_choice")
    return None if choice is None else getattr(p, choice)


def set_parameter(p: pb.InferParameter, value) -> bool:
    """Write a parameter value; False for a value the protocol's parameters cannot hold (it is left out)."""
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        if value >= 2**63:
            p.uint64_param = value
        else:
            p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    elif isinstance(value, str):
        p.string_param = value
    else:
        return False
    return True


def _parameters(entries) -> dict:
    return {k: parameter_value(v) for k, v in entries.items()}


def _typed_array(values, datatype: str, where: str) -> np.ndarray:
    dtype = DATATYPES[datatype]
    if dtype.kind in "iu":
        wide = np.asarray(values, dtype=np.uint64 if dtype.kind == "u" else np.int64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise BadRequest(f"{where}: contents hold values outside the range of {datatype}")
        return wide.astype(dtype)
    return np.asarray(values, dtype=dtype)


def _input_tensor(t, i: int, raw: bytes | None) -> Tensor:
    where = f"inputs[{i}]"
    if not t.name:
        raise BadRequest(f"{where}.name must be a non-empty string")
    if t.datatype not in DATATYPES:
        raise BadRequest(f"{where} ({t.name}): datatype {t.datatype!r} is not supported; use one of "
                         f"{', '.join(DATATYPES)}")
    shape = tuple(t.shape)
    if any(s < 0 for s in shape):
        raise BadRequest(f"{where}.shape must be a list of non-negative integers, got {list(shape)!r}")
    count = math.prod(shape)
    dtype = DATATYPES[t.datatype]
    where = f"{where} ({t.name})"
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(f"{where}: raw_input_contents[{i}] holds {len(raw)} bytes but shape {list(shape)} of "
                             f"{t.datatype} needs {count * dtype.itemsize}")
        return Tensor(t.name, t.datatype, np.frombuffer(raw, dtype=dtype).reshape(shape), _parameters(t.parameters))
    field = CONTENTS_FIELD.get(t.datatype)
    if field is None:
        raise BadRequest(f"{where}: {t.datatype} has no typed contents field; send it in raw_input_contents")
    values = getattr(t.contents, field)
    if len(values) != count:
        raise BadRequest(f"{where}: contents.{field} holds {len(values)} values but shape {list(shape)} needs "
                         f"{count}")
    return Tensor(t.name, t.datatype, _typed_array(values, t.datatype, where).reshape(shape),
                  _parameters(t.parameters))


def infer_request(msg: pb.ModelInferRequest) -> InferRequest:
    """The protocol's request from a ModelInferRequest (its tensors still unchecked against the model)."""
    if not msg.inputs:
        raise BadRequest("request needs a non-empty 'inputs' list")
    raw = list(msg.raw_input_contents)
    if raw and len(raw) != len(msg.inputs):
        raise BadRequest(f"raw_input_contents holds {len(raw)} entries for {len(msg.inputs)} inputs; send one per "
                         "input, or none and each input's contents")
    if raw and any(t.HasField("contents") for t in msg.inputs):
        raise BadRequest("the request sends raw_input_contents and typed contents; use one form for all inputs")
    inputs = [_input_tensor(t, i, raw[i] if raw else None) for i, t in enumerate(msg.inputs)]
    outputs = [RequestedOutput(o.name, True) for o in msg.outputs] or None
    return InferRequest(msg.id or None, _parameters(msg.parameters), inputs, outputs, True)


def answers_raw(msg: pb.ModelInferRequest) -> bool:
    """The answer's form: raw bytes when the request sent raw bytes (or nothing typed)."""
    return bool(msg.raw_input_contents) or not any(t.HasField("contents") for t in msg.inputs)


def infer_response(model_name: str, model_version: str, request_id: str | None, outputs: list[Tensor],
                   raw: bool, parameters: dict | None = None) -> pb.ModelInferResponse:
    msg = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id or "")
    for k, v in (parameters or {}).items():
        if not set_parameter(msg.parameters[k], v):
            del msg.parameters[k]
    for t in outputs:
        arr = np.ascontiguousarray(t.data, dtype=DATATYPES[t.datatype])
        out = msg.outputs.add(name=t.name, datatype=t.datatype, shape=arr.shape)
        field = CONTENTS_FIELD.get(t.datatype)
        if raw or field is None:
            msg.raw_output_contents.append(arr.tobytes())
        else:
            getattr(out.contents, field).extend(arr.reshape(-1).tolist())
    if not raw and len(msg.raw_output_contents) not in (0, len(outputs)):
        # raw_output_contents must cover every output or none: an FP16 output makes them all raw
        return infer_response(model_name, model_version, request_id, outputs, True, parameters)
    return msg
