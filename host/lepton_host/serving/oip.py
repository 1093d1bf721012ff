"""Open Inference Protocol v2 (KServe v2 / Triton) inference messages, in JSON and with Triton's binary
tensor data extension.

Binary extension: the body is a JSON header of `Inference-Header-Content-Length` bytes followed by the raw
little-endian tensor bytes of every input whose `parameters.binary_data_size` is set, in input order. A
response carries outputs the same way when the request asked for it (`outputs[i].parameters.binary_data` or
the request-level `parameters.binary_data_output`). Used by both the servers and the cloud client.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import BadRequest

HEADER_LENGTH = "Inference-Header-Content-Length"

# OIP datatype name -> numpy dtype (little-endian, as the extension defines the byte order).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
FLOAT_TYPES = ("FP16", "FP32", "FP64")


def datatype_of(arr: np.ndarray) -> str:
    for name, dt in DATATYPES.items():
        if arr.dtype == dt or arr.dtype == dt.newbyteorder("="):
            return name
    raise BadRequest(f"numpy dtype {arr.dtype} has no Open Inference Protocol datatype")


@dataclass
class Tensor:
    name: str
    datatype: str
    data: np.ndarray  # already shaped
    parameters: dict = field(default_factory=dict)


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    id: str | None
    parameters: dict
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: every output, in the default form
    binary_output_default: bool

    def wants_binary(self, output_name: str) -> bool:
        if self.outputs:
            for o in self.outputs:
                if o.name == output_name:
                    return o.binary
        return self.binary_output_default


def _split_body(body: bytes, header_length: str | int | None) -> tuple[bytes, memoryview]:
    if header_length is None or header_length == "":
        return body, memoryview(b"")
    try:
        n = int(header_length)
    except (TypeError, ValueError):
        raise BadRequest(f"{HEADER_LENGTH} must be an integer byte count, got {header_length!r}") from None
    if not 0 < n <= len(body):
        raise BadRequest(f"{HEADER_LENGTH} is {n} but the body holds {len(body)} bytes")
    return body[:n], memoryview(body)[n:]


def _reject_constant(name: str):
    # Python's json accepts NaN/Infinity literals; the protocol's JSON does not, and neither does the model.
    raise BadRequest(f"JSON literal {name} is not a number the model accepts; send finite values")


# Made once: json.loads/dumps with options build a new decoder/encoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _loads(header: bytes) -> Any:
    try:
        # as json.loads reads bytes: UTF-8, -16 or -32 told by the first bytes
        return _DECODER.decode(header.decode(json.detect_encoding(header), "surrogatepass"))
    except BadRequest:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None


def _shape_of(t: dict, where: str) -> tuple[int, ...]:
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise BadRequest(f"{where}.shape must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def _tensor_from_json(t: Any, where: str, binary: memoryview, offset: int) -> tuple[Tensor, int, tuple | None]:
    """-> (tensor, offset after its binary data, the header's part of it for `_HEADERS`: None for inline data)."""
    if not isinstance(t, dict):
        raise BadRequest(f"{where} must be a JSON object")
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}.name must be a non-empty string")
    datatype = t.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequest(
            f"{where} ({name}): datatype {datatype!r} is not supported; use one of {', '.join(DATATYPES)}"
        )
    shape = _shape_of(t, where)
    count = math.prod(shape)
    params = t.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}.parameters must be a JSON object")
    dtype = DATATYPES[datatype]
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0:
            raise BadRequest(f"{where}.parameters.binary_data_size must be a non-negative integer")
        if size != count * dtype.itemsize:
            raise BadRequest(
                f"{where} ({name}): binary_data_size {size} does not match shape {list(shape)} of {datatype} "
                f"({count * dtype.itemsize} bytes)"
            )
        spec = (name, datatype, dtype, shape, params, size)
        return _binary_tensor(spec, where, binary, offset), offset + size, spec
    if "data" not in t:
        raise BadRequest(f"{where} ({name}) has neither data nor parameters.binary_data_size")
    try:
        arr = np.asarray(t["data"], dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"{where} ({name}): data does not hold {datatype} values") from None
    if arr.size != count:
        raise BadRequest(f"{where} ({name}): data holds {arr.size} values but shape {list(shape)} needs {count}")
    return Tensor(name, datatype, arr.reshape(shape), params), offset, None


def _binary_tensor(spec: tuple, where: str, binary: memoryview, offset: int) -> Tensor:
    name, datatype, dtype, shape, params, size = spec
    if offset + size > len(binary):
        raise BadRequest(f"{where} ({name}): body ends before its {size} bytes of binary data")
    return Tensor(name, datatype, np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape), params)


def _unclaimed(binary: memoryview, offset: int) -> None:
    if offset != len(binary):
        raise BadRequest(f"body carries {len(binary) - offset} bytes of binary data no input claims")


# Binary-tensor requests' JSON headers already read, by their bytes: clients send the same header for every
# request of a shape, and what it says (checked when first read) does not depend on the tensor bytes after it.
_HEADERS: dict[bytes, tuple] = {}
_HEADERS_MAX = 256


def parse_infer_request(body: bytes, header_length: str | int | None = None) -> InferRequest:
    header, binary = _split_body(body, header_length)
    known = _HEADERS.get(header) if header is not body else None
    if known is not None:
        return _request_from_known(known, binary)
    msg = _loads(header)
    if not isinstance(msg, dict):
        raise BadRequest("inference request must be a JSON object")
    rid = msg.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest("request id must be a string")
    params = msg.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("request parameters must be a JSON object")
    raw_inputs = msg.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("request needs a non-empty 'inputs' list")
    inputs, specs, offset = [], [], 0
    for i, t in enumerate(raw_inputs):
        tensor, offset, spec = _tensor_from_json(t, f"inputs[{i}]", binary, offset)
        inputs.append(tensor)
        specs.append(spec)
    _unclaimed(binary, offset)
    outputs = None
    binary_default = bool(params.get("binary_data_output", False))
    if msg.get("outputs") is not None:
        if not isinstance(msg["outputs"], list):
            raise BadRequest("request 'outputs' must be a list")
        outputs = []
        for i, o in enumerate(msg["outputs"]):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise BadRequest(f"outputs[{i}] must be an object with a name")
            op = o.get("parameters") or {}
            if not isinstance(op, dict):
                raise BadRequest(f"outputs[{i}].parameters must be a JSON object")
            outputs.append(RequestedOutput(o["name"], bool(op.get("binary_data", binary_default))))
    if header is not body and None not in specs:
        if len(_HEADERS) >= _HEADERS_MAX:
            _HEADERS.clear()
        # copies: the request handed out below is the caller's to change
        _HEADERS[header] = (rid, dict(params), tuple((*sp[:4], dict(sp[4]), sp[5]) for sp in specs),
                            None if outputs is None else tuple((o.name, o.binary) for o in outputs), binary_default)
    return InferRequest(rid, params, inputs, outputs, binary_default)


def _request_from_known(known: tuple, binary: memoryview) -> InferRequest:
    rid, params, specs, outputs, binary_default = known
    inputs, offset = [], 0
    for i, spec in enumerate(specs):
        tensor = _binary_tensor(spec, f"inputs[{i}]", binary, offset)
        tensor.parameters = dict(tensor.parameters)
        inputs.append(tensor)
        offset += spec[5]
    _unclaimed(binary, offset)
    return InferRequest(rid, dict(params), inputs,
                        None if outputs is None else [RequestedOutput(n, b) for n, b in outputs], binary_default)


def _json_safe(params: dict) -> dict:
    return {k: v for k, v in params.items() if isinstance(v, (str, int, float, bool))}


def encode_infer_response(
    model_name: str,
    outputs: list[Tensor],
    binary: list[bool],
    request_id: str | None = None,
    model_version: str | None = None,
    parameters: dict | None = None,
) -> tuple[bytes, dict[str, str]]:
    """-> (body, extra headers). Outputs flagged binary travel as raw bytes after the JSON header."""
    safe = _json_safe(parameters) if parameters else None
    key = _head_key(model_name, model_version, request_id, safe, outputs, binary)
    header = _HEADS.get(key) if key is not None else None
    if header is not None:
        blobs = [np.ascontiguousarray(t.data, dtype=DATATYPES[t.datatype]).tobytes() for t in outputs]
        return _framed(header, blobs)
    msg: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        msg["model_version"] = model_version
    if request_id is not None:
        msg["id"] = request_id
    if parameters:
        msg["parameters"] = safe
    msg["outputs"], blobs = _encode_tensors(outputs, binary)
    header = _ENCODER.encode(msg).encode()
    if key is not None:
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[key] = header
    return _framed(header, blobs)


# Response headers already written, by everything they say: answers of one model to requests of one shape
# differ only in their tensor bytes. Only for binary outputs, no request id, and parameters of exact types that
# equal values write alike (str, int, bool: not floats, where 0.0 == -0.0).
_HEADS: dict[tuple, bytes] = {}
_HEADS_MAX = 256
_KEY_TYPES = (str, int, bool)


def _head_key(model_name, model_version, request_id, params: dict | None, outputs: list[Tensor],
              binary: list[bool]) -> tuple | None:
    if request_id is not None or not all(binary) or model_name.__class__ is not str:
        return None
    if model_version is not None and model_version.__class__ is not str:
        return None
    items = None
    if params is not None:
        items = tuple([(k, v.__class__, v) for k, v in params.items()])
        for k, cls, _ in items:
            if k.__class__ is not str or cls not in _KEY_TYPES:
                return None
    shapes = [getattr(t.data, "shape", None) for t in outputs]
    if None in shapes:
        return None
    return (model_name, model_version, items, tuple([(t.name, t.datatype, sh) for t, sh in zip(outputs, shapes)]))


def encode_infer_request(
    inputs: list[Tensor],
    request_id: str | None = None,
    binary: bool = True,
    parameters: dict | None = None,
    binary_outputs: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """Client side: the same message a tritonclient InferInput/infer() call would send."""
    msg: dict[str, Any] = {}
    if request_id is not None:
        msg["id"] = request_id
    params = dict(parameters or {})
    if binary_outputs:
        params["binary_data_output"] = True
    if params:
        msg["parameters"] = params
    msg["inputs"], blobs = _encode_tensors(inputs, [binary] * len(inputs))
    return _frame(msg, blobs)


def _encode_tensors(tensors: list[Tensor], binary: list[bool]) -> tuple[list[dict], list[bytes]]:
    """Tensor entries of a message, each either inline JSON data or a binary blob appended after the header."""
    entries, blobs = [], []
    for t, as_binary in zip(tensors, binary):
        arr = np.ascontiguousarray(t.data, dtype=DATATYPES[t.datatype])
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(arr.shape)}
        if as_binary:
            raw = arr.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        entries.append(entry)
    return entries, blobs


def _frame(msg: dict, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """JSON alone, or the binary tensor extension's framing: JSON header, then the blobs, header length in a header."""
    return _framed(_ENCODER.encode(msg).encode(), blobs)


def _framed(header: bytes, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    if not blobs:
        return header, {"content-type": "application/json"}
    return b"".join([header, *blobs]), {
        HEADER_LENGTH: str(len(header)),
        "content-type": "application/octet-stream",
    }


@dataclass
class InferResponse:
    model_name: str
    id: str | None
    parameters: dict
    outputs: dict[str, np.ndarray]


def decode_infer_response(body: bytes, header_length: str | int | None = None) -> InferResponse:
    """Client side: parse a server's answer (JSON or binary outputs). Raises ValueError when malformed."""
    try:
        header, binary = _split_body(body, header_length)
        msg = json.loads(header)
        outs, offset = {}, 0
        for t in msg["outputs"]:
            dtype = DATATYPES[t["datatype"]]
            shape = tuple(t["shape"])
            size = (t.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                outs[t["name"]] = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape).copy()
                offset += size
            else:
                outs[t["name"]] = np.asarray(t["data"], dtype=dtype).reshape(shape)
        return InferResponse(msg.get("model_name", ""), msg.get("id"), msg.get("parameters") or {}, outs)
    except (BadRequest, KeyError, TypeError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed inference response: {e}") from None


def error_message(body: bytes, fallback: str) -> str:
    """The error text of any OIP-speaking server: `{"error": ...}` (Triton, KServe), FastAPI's
    `{"detail": ...}` (string or validation list), or plain text."""
    try:
        msg = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        # Plain text; for a Python traceback the last line is the one that says what went wrong.
        lines = [ln.strip() for ln in body[-2000:].decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else fallback
    if isinstance(msg, dict):
        for key in ("error", "detail", "message"):
            v = msg.get(key)
            if isinstance(v, str) and v:
                return v
            if isinstance(v, list) and v:
                parts = [str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in v]
                return "; ".join(parts)
            if isinstance(v, dict) and v:
                return json.dumps(v)
    return fallback
