"""The OIP inference route: the body read within its size and time limits (and decompressed within the size
limit), parsed (JSON or the binary tensor extension), checked against the model's input, answered by the
service within the request's timeout, and encoded in the form the caller asked for."""

from __future__ import annotations

import asyncio
import time
import zlib

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from .errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from .middleware import BODY_READ
from .model_service import ModelService, ServerOptions
from .oip import FLOAT_TYPES, HEADER_LENGTH, InferRequest, Tensor, encode_infer_response, parse_infer_request
from .schedule_policy import priority_of, timeout_of

FP32_MAX = float(np.finfo(np.float32).max)
# Content-Encoding -> zlib wbits (tritonclient's request_compression_algorithm sends gzip or zlib "deflate").
ENCODINGS = {"identity": None, "gzip": 31, "x-gzip": 31, "deflate": 15}


class InferRoute:
    def __init__(self, models, options: ServerOptions):
        self.models = models  # routes_info.SingleModel, or an edge node's repository
        self.options = options

    async def infer(self, request: Request) -> Response:
        s = await self.models.resolve(request, for_infer=True)
        stats = getattr(s, "statistics", None)
        if stats is None:
            return (await self._infer(s, request))[0]
        start = time.perf_counter()
        try:
            response, n = await self._infer(s, request)
        except BaseException:
            stats.request_done(False, 0, time.perf_counter() - start)
            raise
        stats.request_done(True, n, time.perf_counter() - start)
        return response

    async def _infer(self, s: ModelService, request: Request) -> tuple[Response, int]:
        body = await read_body(request, self.options)
        req = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        x = validate(s, self.options, req)
        y, params = await s.infer(x, req, request_timeout_s(s, req))  # the service keeps the deadline on every path
        # Under a model repository the version that answered says so: a switch may happen while a request runs.
        version = params.pop("model_version", None) or s.version
        out = Tensor(s.output.name, s.output.datatype, y)
        body, headers = encode_infer_response(s.name, [out], [req.wants_binary(s.output.name)], req.id, version,
                                              params)
        return Response(body, headers=headers), x.shape[0]


async def read_body(request: Request, opts: ServerOptions) -> bytes:
    encoding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
    if encoding not in ENCODINGS:
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or "
                                   f"an uncompressed body")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > opts.max_body_bytes:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {opts.max_body_bytes}")
    chunks, size = [], 0

    async def receive_all() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > opts.max_body_bytes:
                raise PayloadTooLarge(f"request body exceeds the limit of {opts.max_body_bytes} bytes")
            chunks.append(chunk)

    try:
        # wait_for, not asyncio.timeout: the board's Python is 3.10
        await asyncio.wait_for(receive_all(), opts.body_timeout_s)
    except asyncio.TimeoutError:
        raise RequestTimeout(f"request body did not arrive within {opts.body_timeout_s:.3g} s "
                             f"({size} bytes came)") from None
    request.scope[BODY_READ] = True
    body = b"".join(chunks)
    wbits = ENCODINGS[encoding]
    return body if wbits is None else inflate(body, wbits, opts.max_body_bytes)


def inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """Decompress a gzip (wbits 31) or zlib (15; raw deflate also accepted) body to at most `limit` bytes."""
    if wbits == 15 and len(data) >= 2 and (data[0] & 0x0F != 8 or (data[0] << 8 | data[1]) % 31):
        wbits = -15  # no zlib header: raw deflate, as some clients send for "deflate"
    out, rest = [], data
    size = 0
    try:
        while True:  # gzip allows several members back to back
            d = zlib.decompressobj(wbits)
            chunk = d.decompress(rest, limit - size + 1)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body decompresses to more than the limit of {limit} bytes")
            out.append(chunk)
            if not d.eof:
                raise BadRequest("compressed request body ends before its compressed stream does")
            rest = d.unused_data
            if not rest or wbits != 31:
                break
    except zlib.error as e:
        raise BadRequest(f"request body is not valid {'gzip' if wbits == 31 else 'deflate'} data: {e}") from None
    if rest:
        raise BadRequest(f"request body carries {len(rest)} bytes after its compressed stream")
    return b"".join(out)


def validate(service: ModelService, opts: ServerOptions, req: InferRequest) -> np.ndarray:
    """The request's one input tensor, checked against the model's input -> its data."""
    spec = service.input
    if len(req.inputs) != 1:
        raise BadRequest(f"model {service.name!r} takes exactly one input ({spec.name!r}), got {len(req.inputs)}")
    t = req.inputs[0]
    if t.name != spec.name:
        raise BadRequest(f"unknown input {t.name!r}; model {service.name!r} takes {spec.name!r}")
    if t.datatype not in FLOAT_TYPES:
        raise BadRequest(f"input {t.name!r} has datatype {t.datatype}; the model takes {spec.datatype} "
                         f"(FP16/FP32/FP64 are accepted)")
    shape = tuple(t.data.shape)
    if len(shape) != len(spec.shape) + 1 or shape[1:] != tuple(spec.shape) or shape[0] < 1:
        dims = ", ".join(map(str, spec.shape))
        raise BadRequest(f"input {t.name!r} has shape {list(shape)}; expected [N, {dims}]"
                         f" with N >= 1 samples")
    if shape[0] > opts.max_request_rows:
        raise BadRequest(f"batch of {shape[0]} samples exceeds the limit of {opts.max_request_rows} per request")
    if not np.isfinite(t.data).all():
        raise BadRequest(f"input {t.name!r} holds NaN or Inf; the model needs finite values")
    if t.data.dtype == np.float64 and spec.datatype == "FP32" and np.abs(t.data).max() > FP32_MAX:
        raise BadRequest(f"input {t.name!r} holds FP64 values beyond the FP32 range the model takes")
    priority_of(req.parameters)  # a bad priority is the caller's error, whichever service answers
    if req.outputs:
        for o in req.outputs:
            if o.name != service.output.name:
                raise BadRequest(f"unknown output {o.name!r}; model {service.name!r} has {service.output.name!r}")
    return t.data


def request_timeout_s(service: ModelService, req: InferRequest) -> float:
    """The service's timeout, or the request's own `timeout` (schedule_policy.py) when shorter."""
    return timeout_of(service.request_timeout_s, req.parameters)
