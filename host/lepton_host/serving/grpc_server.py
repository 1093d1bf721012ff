"""The Open Inference Protocol over gRPC (KServe v2 / Triton `inference.GRPCInferenceService`), served beside the
HTTP surface by the same process, on the same event loop and over the same models object (app.py's SingleModel
around a gateway or cloud service, or an edge node's repository): one batcher, one routing, one set of metrics and
statistics, one token, one rule per error.

Served calls: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig, ModelStatistics and
ModelInfer; the others (streaming, repository, shared memory, trace and log settings) answer UNIMPLEMENTED.

- What the server, its models, their configuration and statistics are is asked of the HTTP surface's own handlers
  (routes_info.InfoRoutes) and their JSON carried over into the protobuf messages, so both surfaces answer alike.
  A model and version are resolved by the same rules (and refused with the same messages): those handlers and
  `resolve` read only the path parameters of a request, which `_Target` provides.
- An inference goes through routes_infer's validation and timeout rules and the service's own `infer`
  (grpc_tensors.py converts the messages); the call's gRPC deadline, when it has one, bounds the timeout too.
  The answer's parameters (`served_by`, `route_reason`, ...) are the HTTP answer's.
- Every call but ServerLive and ServerReady needs the server's bearer token, when it has one, in the
  `authorization` metadata (`Bearer <token>`), as the HTTP routes but the health probes do.
- Failures carry the gRPC code of their HTTP status (grpc_errors.py) and the HTTP message.
- The requests metric counts each call as route `grpc_<call>` with the HTTP outcome (`ok`, or the status the
  same failure gets over HTTP); successful inferences are timed in the same latency histogram.

`GrpcFront` owns the grpc.aio server; runner.py binds it before the app starts, starts it once the app (and so
the service) has started, and stops it before the app stops, so the service starts and stops once for both.
grpc.aio runs on the loop uvicorn runs (uvloop included). The stubs come from grpc_stubs/ (why there: its
docstring).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import time

import grpc
from google.protobuf import json_format

from .errors import Unauthorized
from .grpc_errors import failure_of
from .grpc_stubs import grpc_service_pb2 as pb
from .grpc_stubs import grpc_service_pb2_grpc as rpc
from .grpc_stubs import model_config_pb2 as mc
from .grpc_tensors import answers_raw, infer_request, infer_response
from .middleware import CLIENT_DISCONNECTED
from .model_service import ServerOptions
from .oip import Tensor
from .routes_infer import request_timeout_s, validate
from .routes_info import InfoRoutes, SingleModel
from .runner import BindError

log = logging.getLogger(__name__)

ROUTE_PREFIX = "grpc_"  # the requests metric's route label of a gRPC call: grpc_infer, grpc_model_metadata, ...
INFER_ROUTE = ROUTE_PREFIX + "infer"


class _Target:
    """The model (and version) a call names, as the shared handlers read it from an HTTP request: its path
    parameters. Proto3's empty version is no version."""

    def __init__(self, name: str, version: str = ""):
        self.path_params = {"model": name, "version": version} if version else {"model": name}


def _call(route: str, public: bool = False):
    """A servicer method answered like an HTTP route: the token checked (unless public), the call counted, a
    failure answered with its gRPC code and message."""

    def wrap(method):
        @functools.wraps(method)
        async def handler(self: InferenceServicer, request, context: grpc.aio.ServicerContext):
            start = time.perf_counter()
            try:
                if not public:
                    self.check_token(context)
                response = await method(self, request, context)
            except asyncio.CancelledError:  # the caller went away (or its deadline passed): no one reads it
                self.count(route, CLIENT_DISCONNECTED)
                raise
            except Exception as exc:
                failure = failure_of(exc)
                if failure.unexpected:
                    log.error("gRPC %s failed", route, exc_info=exc)
                self.count(route, str(failure.status))
                await context.abort(failure.code, failure.message)
            self.count(route, "ok")
            if route == INFER_ROUTE:
                m = self.models.metrics
                m.child(m.request_latency, self.models.name).observe(time.perf_counter() - start)
            return response

        return handler

    return wrap


class InferenceServicer(rpc.GRPCInferenceServiceServicer):
    def __init__(self, models, options: ServerOptions):
        self.models = models  # routes_info.SingleModel, or an edge node's repository (node_app.NodeModels)
        self.options = options
        self.info = InfoRoutes(models, options)
        self._expected = f"Bearer {options.token}".encode() if options.token else None

    # ---- the rules every call follows -------------------------------------------------------------------
    def check_token(self, context: grpc.aio.ServicerContext) -> None:
        if self._expected is None:
            return
        given = b""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                break
        if not hmac.compare_digest(given, self._expected):
            raise Unauthorized("missing or wrong bearer token (send metadata 'authorization: Bearer <token>')")

    def count(self, route: str, outcome: str) -> None:
        m = self.models.metrics
        m.child(m.requests, route, outcome).inc()

    async def _info(self, handler, name: str = "", version: str = "") -> dict:
        """An InfoRoutes handler's JSON answer for this model and version."""
        return json.loads((await handler(_Target(name, version))).body)

    # ---- health and metadata ----------------------------------------------------------------------------
    @_call(ROUTE_PREFIX + "live", public=True)
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @_call(ROUTE_PREFIX + "ready", public=True)
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=bool(self.models.ready()))

    @_call(ROUTE_PREFIX + "model_ready")
    async def ModelReady(self, request, context):
        d = await self._info(self.info.model_ready, request.name, request.version)
        return pb.ModelReadyResponse(ready=bool(d["ready"]))

    @_call(ROUTE_PREFIX + "server_metadata")
    async def ServerMetadata(self, request, context):
        return json_format.ParseDict(await self._info(self.info.server_metadata), pb.ServerMetadataResponse(),
                                     ignore_unknown_fields=True)

    @_call(ROUTE_PREFIX + "model_metadata")
    async def ModelMetadata(self, request, context):
        # The outputs' parameters (a classifier's class order) have no field in the gRPC message.
        d = await self._info(self.info.model_metadata, request.name, request.version)
        return json_format.ParseDict(d, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    @_call(ROUTE_PREFIX + "model_config")
    async def ModelConfig(self, request, context):
        d = await self._info(self.info.model_config, request.name, request.version)
        return pb.ModelConfigResponse(config=json_format.ParseDict(d, mc.ModelConfig(), ignore_unknown_fields=True))

    @_call(ROUTE_PREFIX + "model_stats")
    async def ModelStatistics(self, request, context):
        if request.name:
            d = await self._info(self.info.model_stats, request.name, request.version)
        else:
            d = await self._info(self.info.all_stats)
        return json_format.ParseDict(d, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

    # ---- inference --------------------------------------------------------------------------------------
    @_call(INFER_ROUTE)
    async def ModelInfer(self, request, context):
        s = await self.models.resolve(_Target(request.model_name, request.model_version), for_infer=True)
        stats = getattr(s, "statistics", None)
        if stats is None:
            return (await self._infer(s, request, context))[0]
        start = time.perf_counter()
        try:
            response, n = await self._infer(s, request, context)
        except BaseException:
            stats.request_done(False, 0, time.perf_counter() - start)
            raise
        stats.request_done(True, n, time.perf_counter() - start)
        return response

    async def _infer(self, s, request: pb.ModelInferRequest, context) -> tuple[pb.ModelInferResponse, int]:
        req = infer_request(request)
        x = validate(s, self.options, req)
        timeout = request_timeout_s(s, req)
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining, 1e-3))
        y, params = await s.infer(x, req, timeout)  # the service keeps the deadline on every path
        version = params.pop("model_version", None) or s.version
        out = Tensor(s.output.name, s.output.datatype, y)
        return infer_response(s.name, str(version), req.id, [out], answers_raw(request), params), x.shape[0]


class GrpcFront:
    """The gRPC surface of one models object: a grpc.aio server, created and bound on the event loop that serves
    the HTTP app (runner.py does so), with a request size limit equal to the HTTP body limit."""

    def __init__(self, models, options: ServerOptions, port: int = 0, grace_s: float = 2.0):
        self.models = models
        self.options = options
        self.port = port  # 0: a free port, known once bound
        self.host: str | None = None
        self.grace_s = grace_s  # calls in flight at stop get this long, like the HTTP server's graceful shutdown
        self._server: grpc.aio.Server | None = None

    @classmethod
    def for_service(cls, service, options: ServerOptions, port: int = 0) -> GrpcFront:
        """The front of a single-model server (the gateway, the cloud server)."""
        return cls(SingleModel(service), options, port)

    @property
    def target(self) -> str:
        """host:port as a gRPC client names it."""
        host = self.host or "127.0.0.1"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def bind(self, host: str) -> int:
        """Create the server and listen on host:port (not serving yet); -> the port. Call on the serving loop."""
        self.host = host
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a second server sharing it
            ("grpc.max_receive_message_length", min(self.options.max_body_bytes, 2**31 - 1)),
        ])
        rpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.models, self.options), server)
        address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if not port:
            raise BindError(f"cannot listen for gRPC on {address} (another server running? choose another "
                            "--grpc-port)")
        self.port, self._server = port, server
        return port

    async def start(self) -> None:
        if self._server is None:
            raise BindError("the gRPC server was not bound before start")
        await self._server.start()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(self.grace_s)

