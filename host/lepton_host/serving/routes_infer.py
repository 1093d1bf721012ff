"""The OIP inference route: the body read within its size and time limits (and decompressed within the size
limit), parsed (JSON or the binary tensor extension), checked against the model's input, answered by the
service within the request's timeout, and encoded in the form the caller asked for.

Two entrances to the same work: `InferRoute.answer`, called with the raw ASGI scope by the app's inference front
(middleware.InferFront, ahead of Starlette's router: the request path every inference takes), and
`InferRoute.infer`, the Starlette endpoint for what the front leaves to the router."""

from __future__ import annotations

import asyncio
import time
import zlib

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from .middleware import BODY_READ
from .model_service import ModelService, ServerOptions
from .oip import FLOAT_TYPES, HEADER_LENGTH, InferRequest, Tensor, encode_infer_response, parse_infer_request
from .schedule_policy import priority_of, timeout_of

FP32_MAX = float(np.finfo(np.float32).max)
# Content-Encoding -> zlib wbits (tritonclient's request_compression_algorithm sends gzip or zlib "deflate").
ENCODINGS = {"identity": None, "gzip": 31, "x-gzip": 31, "deflate": 15}
_HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()


class InferRoute:
    def __init__(self, models, options: ServerOptions):
        self.models = models  # routes_info.SingleModel, or an edge node's repository
        self.options = options

    async def answer(self, scope, receive) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The raw ASGI entrance: -> (response body, raw response headers); raises what the error handlers
        answer. `scope["path_params"]` names the model (and version)."""
        s = await self.models.resolve(Request(scope), for_infer=True)
        encoding = declared = header_length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value.decode("latin-1")
            elif name == _HEADER_LENGTH_KEY:
                header_length = value.decode("latin-1")
            elif name == b"content-encoding":
                encoding = value.decode("latin-1")
        start = time.perf_counter()
        try:
            body = await receive_body(scope, receive, encoding, declared, self.options)
            body, headers, n = await self._answer(s, body, header_length)
        except BaseException:
            _request_done(s, False, 0, start)
            raise
        _request_done(s, True, n, start)
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        raw.append((b"content-length", b"%d" % len(body)))
        return body, raw

    async def infer(self, request: Request) -> Response:
        """The Starlette endpoint: the same work, for requests the front does not take."""
        s = await self.models.resolve(request, for_infer=True)
        start = time.perf_counter()
        try:
            body = await read_body(request, self.options)
            body, headers, n = await self._answer(s, body, request.headers.get(HEADER_LENGTH))
        except BaseException:
            _request_done(s, False, 0, start)
            raise
        _request_done(s, True, n, start)
        return Response(body, headers=headers)

    async def _answer(self, s: ModelService, body: bytes, header_length: str | None) -> tuple[bytes, dict, int]:
        req = parse_infer_request(body, header_length)
        x = validate(s, self.options, req)
        y, params = await s.infer(x, req, request_timeout_s(s, req))  # the service keeps the deadline on every path
        # Under a model repository the version that answered says so: a switch may happen while a request runs.
        version = params.pop("model_version", None) or s.version
        out = Tensor(s.output.name, s.output.datatype, y)
        body, headers = encode_infer_response(s.name, [out], [req.wants_binary(s.output.name)], req.id, version,
                                              params)
        return body, headers, x.shape[0]


def _request_done(s: ModelService, ok: bool, n: int, start: float) -> None:
    """Triton's statistics for services that keep them."""
    stats = getattr(s, "statistics", None)
    if stats is not None:
        stats.request_done(ok, n, time.perf_counter() - start)


async def read_body(request: Request, opts: ServerOptions) -> bytes:
    """The body of a Starlette request (see `receive_body`)."""
    h = request.headers
    return await receive_body(request.scope, request.receive, h.get("content-encoding"), h.get("content-length"),
                              opts)


async def receive_body(scope, receive, encoding: str | None, declared: str | None, opts: ServerOptions) -> bytes:
    """The request body from the ASGI `receive`, within the size limit (declared and as it comes) and the body
    timeout, decompressed per its Content-Encoding within the size limit. Marks the scope BODY_READ."""
    encoding = (encoding or "identity").strip().lower() or "identity"
    if encoding not in ENCODINGS:
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or "
                                   f"an uncompressed body")
    if declared is not None and declared.isdigit() and int(declared) > opts.max_body_bytes:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {opts.max_body_bytes}")
    chunks, size = [], 0
    # The body timeout as a timer that cancels this task, not wait_for (a task per request) nor asyncio.timeout
    # (the board's Python is 3.10): a body that is already there costs one timer.
    task = asyncio.current_task()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(opts.body_timeout_s, expire)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > opts.max_body_bytes:
                raise PayloadTooLarge(f"request body exceeds the limit of {opts.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if not expired:
            raise
        uncancel = getattr(task, "uncancel", None)  # 3.11+: the cancel was ours and is answered here
        if uncancel is not None:
            uncancel()
        raise RequestTimeout(f"request body did not arrive within {opts.body_timeout_s:.3g} s "
                             f"({size} bytes came)") from None
    finally:
        timer.cancel()
    scope[BODY_READ] = True
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
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
