"""The Open Inference Protocol v2 HTTP surface (Starlette), shared by the edge gateway and the cloud server.

A server plugs in a `ModelService` (one model: its tensors, readiness, and an async `infer`); this module puts
the protocol together: the routes (routes_info.py: health, metadata, Triton's model configuration, metrics;
routes_infer.py: inference in JSON or with the binary tensor extension, validated, within a body size limit),
the error handlers that answer every failure as `{"error": ...}` with its status (error_responses.py), and
the middleware (middleware.py): an optional bearer token on every route but the health probes, and the
Prometheus request counts and latency. Inference requests take a front door (middleware.InferFront) ahead of
Starlette's router and its middleware, under the same rules: they are the request path that has to be lean.
"""

from __future__ import annotations

import contextlib

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from .error_responses import EXCEPTION_HANDLERS
from .middleware import BearerToken, InferFront, RequestMetrics
from .model_service import ModelService, ServerOptions, TensorInfo
from .routes_infer import InferRoute
from .routes_info import InfoRoutes, SingleModel

__all__ = ["ModelService", "ServerOptions", "TensorInfo", "create_app", "create_models_app"]

INFER_ROUTE = "infer"  # the route whose latency is measured


def create_app(service: ModelService, options: ServerOptions | None = None) -> Starlette:
    return create_models_app(SingleModel(service), options)


def create_models_app(models, options: ServerOptions | None = None, extra_routes=lambda route: ()) -> Starlette:
    """The OIP app over `models` (SingleModel, or an edge node's repository: routes_info.SingleModel's interface);
    `extra_routes(route)` adds routes built with the same token and metrics rules."""
    opts = options or ServerOptions()
    info = InfoRoutes(models, opts)
    infer_route = InferRoute(models, opts)
    infer = infer_route.infer
    token = [Middleware(BearerToken, token=opts.token)] if opts.token else None

    def route(path: str, endpoint, name: str, public: bool = False, methods: list[str] | None = None) -> Route:
        """`name` is the route's label in the requests metric; `public` routes need no token."""
        return Route(path, endpoint, name=name, methods=methods, middleware=None if public else token)

    m = "/v2/models/{model}"
    mv = "/v2/models/{model}/versions/{version}"
    routes = [
        route("/v2/health/live", info.live, "live", public=True),
        route("/v2/health/ready", info.ready, "ready", public=True),
        route("/v2", info.server_metadata, "server_metadata"),
        route("/v2/models/stats", info.all_stats, "model_stats"),
        route(m, info.model_metadata, "model_metadata"),
        route(mv, info.model_metadata, "model_metadata"),
        route(m + "/ready", info.model_ready, "model_ready"),
        route(mv + "/ready", info.model_ready, "model_ready"),
        route(m + "/config", info.model_config, "model_config"),
        route(mv + "/config", info.model_config, "model_config"),
        route(m + "/stats", info.model_stats, "model_stats"),
        route(mv + "/stats", info.model_stats, "model_stats"),
        route(m + "/infer", infer, INFER_ROUTE, methods=["POST"]),
        route(mv + "/infer", infer, INFER_ROUTE, methods=["POST"]),
        route("/metrics", info.metrics, "metrics"),
        *extra_routes(route),
    ]
    metrics = Middleware(RequestMetrics, metrics=models.metrics, routes=routes, timed_route=INFER_ROUTE,
                         model=models.name)
    front = InferFront(infer_route.answer, models.metrics, INFER_ROUTE, models.name, opts.token)
    return OipApp(front, routes=routes, middleware=[metrics], exception_handlers=EXCEPTION_HANDLERS,
                  lifespan=_lifespan(models))


class OipApp(Starlette):
    """Starlette with the inference front ahead of its middleware and router."""

    def __init__(self, front: InferFront, **kwargs):
        super().__init__(**kwargs)
        self._front = front

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            params = self._front.path_params(scope)
            if params is not None:
                scope["app"] = self
                await self._front(scope, receive, send, params)
                return
        await super().__call__(scope, receive, send)


def _lifespan(service: ModelService):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    return lifespan
