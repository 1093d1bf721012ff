"""The Open Inference Protocol v2 HTTP surface (Starlette), shared by the edge gateway and the cloud server.

A server plugs in a `ModelService` (one model: its tensors, readiness, and an async `infer`); this module does
the protocol: health, server and model metadata, Triton's model configuration, inference in JSON or with the
binary tensor extension, request validation with 4xx `{"error": ...}` answers, an optional bearer token, a
body size limit, and Prometheus `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import time
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lepton_host.errors import LeptonError

from .errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServingError,
    Unauthorized,
    UnsupportedMediaType,
)
from .metrics import CONTENT_TYPE_LATEST, ServingMetrics
from .oip import FLOAT_TYPES, HEADER_LENGTH, InferRequest, Tensor, encode_infer_response, parse_infer_request

TRITON_TYPES = {"FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "FP16": "TYPE_FP16"}
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
FP32_MAX = float(np.finfo(np.float32).max)
# Content-Encoding -> zlib wbits (tritonclient's request_compression_algorithm sends gzip or zlib "deflate").
ENCODINGS = {"identity": None, "gzip": 31, "x-gzip": 31, "deflate": 15}
CLIENT_DISCONNECTED = "client_disconnected"  # the requests metric's outcome for a caller that went away
_BODY_READ = "lepton.body_read"  # scope key: the request body was read to its end


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # per sample
    datatype: str = "FP32"


class ModelService(Protocol):
    name: str
    version: str
    platform: str
    input: TensorInfo
    output: TensorInfo
    max_batch_size: int
    max_queue_delay_s: float
    request_timeout_s: float
    metrics: ServingMetrics

    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def infer(self, x: np.ndarray, request: InferRequest, timeout_s: float) -> tuple[np.ndarray, dict]:
        """Answer within `timeout_s` or raise a ServingError (DeadlineExceeded when out of time)."""
        ...


@dataclass
class ServerOptions:
    server_name: str = "lepton-hls"
    server_version: str = ""
    token: str | None = None
    max_body_bytes: int = 8 << 20  # on the wire and after decompression
    max_request_rows: int = 4096
    body_timeout_s: float = 10.0  # from the end of the headers to the end of the body


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


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


def create_app(service: ModelService, options: ServerOptions | None = None) -> Starlette:
    opts = options or ServerOptions()
    metrics = service.metrics
    expected_auth = f"Bearer {opts.token}".encode() if opts.token else None

    def endpoint(route: str, public: bool = False):
        """Auth, error mapping and request counting around one handler."""

        def wrap(fn):
            @functools.wraps(fn)
            async def handler(request: Request) -> Response:
                try:
                    if expected_auth is not None and not public:
                        got = request.headers.get("authorization", "").encode()
                        if not hmac.compare_digest(got, expected_auth):
                            raise Unauthorized("missing or wrong bearer token (send 'Authorization: Bearer <token>')")
                    response = await fn(request)
                except ClientDisconnect:  # not a fault of ours: no one is left to answer
                    metrics.child(metrics.requests, route, CLIENT_DISCONNECTED).inc()
                    return _error(499, "client closed the request")
                except ServingError as e:
                    response = _error(e.status, str(e))
                except LeptonError as e:
                    response = _error(500, str(e))
                except Exception as e:  # keep serving; say what broke
                    response = _error(500, f"internal error: {type(e).__name__}: {e}")
                code = response.status_code
                if code >= 400 and request.method == "POST" and not request.scope.get(_BODY_READ):
                    # The rest of the body may never come (or come slowly): do not keep the connection for it.
                    response.headers["connection"] = "close"
                metrics.child(metrics.requests, route, "ok" if code < 400 else str(code)).inc()
                return response

            return handler

        return wrap

    def check_model(request: Request) -> None:
        name = request.path_params["model"]
        if name != service.name:
            raise NotFound(f"unknown model {name!r}; this server serves {service.name!r}")
        version = request.path_params.get("version")
        if version is not None and version != service.version:
            raise NotFound(f"model {service.name!r} has no version {version!r} (only {service.version!r})")

    @endpoint("live", public=True)
    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    def readiness() -> dict:
        # A service may say which of its paths can answer (the gateway: edge and cloud); the protocol's
        # `ready` stays the one verdict.
        fn = getattr(service, "readiness", None)
        return fn() if callable(fn) else {}

    @endpoint("ready", public=True)
    async def ready(request: Request) -> Response:
        ok = service.ready()
        return JSONResponse({"ready": ok, **readiness()}, status_code=200 if ok else 503)

    @endpoint("server_metadata")
    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": opts.server_name, "version": opts.server_version, "extensions": EXTENSIONS})

    @endpoint("model_metadata")
    async def model_metadata(request: Request) -> Response:
        check_model(request)
        return JSONResponse({
            "name": service.name,
            "versions": [service.version],
            "platform": service.platform,
            "inputs": [{"name": service.input.name, "datatype": service.input.datatype,
                        "shape": [-1, *service.input.shape]}],
            "outputs": [{"name": service.output.name, "datatype": service.output.datatype,
                         "shape": [-1, *service.output.shape]}],
        })

    @endpoint("model_ready")
    async def model_ready(request: Request) -> Response:
        check_model(request)
        ok = service.ready()
        return JSONResponse({"name": service.name, "ready": ok, **readiness()}, status_code=200 if ok else 503)

    @endpoint("model_config")
    async def model_config(request: Request) -> Response:
        check_model(request)
        return JSONResponse({
            "name": service.name,
            "platform": service.platform,
            "max_batch_size": service.max_batch_size,
            "input": [{"name": service.input.name, "data_type": TRITON_TYPES[service.input.datatype],
                       "dims": list(service.input.shape)}],
            "output": [{"name": service.output.name, "data_type": TRITON_TYPES[service.output.datatype],
                        "dims": list(service.output.shape)}],
            "dynamic_batching": {"max_queue_delay_microseconds": int(service.max_queue_delay_s * 1e6)},
            "version_policy": {"specific": {"versions": [int(service.version)]}}
            if service.version.isdigit() else {"latest": {"num_versions": 1}},
        })

    async def read_body(request: Request) -> bytes:
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
        request.scope[_BODY_READ] = True
        body = b"".join(chunks)
        wbits = ENCODINGS[encoding]
        return body if wbits is None else inflate(body, wbits, opts.max_body_bytes)

    def validate(req: InferRequest) -> np.ndarray:
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
        if req.outputs:
            for o in req.outputs:
                if o.name != service.output.name:
                    raise BadRequest(f"unknown output {o.name!r}; model {service.name!r} has {service.output.name!r}")
        return t.data

    @endpoint("infer")
    async def infer(request: Request) -> Response:
        start = time.perf_counter()
        check_model(request)
        body = await read_body(request)
        req = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        x = validate(req)
        timeout = service.request_timeout_s
        if "timeout" in req.parameters:  # Triton's per-request timeout, in microseconds
            try:
                timeout = min(timeout, max(1e-3, float(req.parameters["timeout"]) / 1e6))
            except (TypeError, ValueError):
                raise BadRequest("parameters.timeout must be a number of microseconds") from None
        y, params = await service.infer(x, req, timeout)  # the service keeps the deadline on every path
        out = Tensor(service.output.name, service.output.datatype, y)
        body, headers = encode_infer_response(
            service.name, [out], [req.wants_binary(service.output.name)], req.id, service.version, params
        )
        metrics.child(metrics.request_latency, service.name).observe(time.perf_counter() - start)
        return Response(body, headers=headers)

    @endpoint("metrics")
    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Outside the endpoints (routing, middleware): the same JSON shape as every other answer.
        return _error(500, f"internal error: {type(exc).__name__}")

    m = "/v2/models/{model}"
    mv = "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route(m, model_metadata),
        Route(mv, model_metadata),
        Route(m + "/ready", model_ready),
        Route(mv + "/ready", model_ready),
        Route(m + "/config", model_config),
        Route(mv + "/config", model_config),
        Route(m + "/infer", infer, methods=["POST"]),
        Route(mv + "/infer", infer, methods=["POST"]),
        Route("/metrics", metrics_endpoint),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    return Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: internal_error},
                     lifespan=lifespan)


