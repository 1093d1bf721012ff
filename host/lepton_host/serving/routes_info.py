"""The OIP routes that describe the server and its model: health, server and model metadata, model readiness,
Triton's model configuration, and Prometheus `/metrics`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .cloud_contract import classes_parameter
from .errors import NotFound
from .metrics import CONTENT_TYPE_LATEST
from .model_service import ModelService, ServerOptions
from .schedule_policy import dynamic_batching_config
from .statistics import ModelStatistics

TRITON_TYPES = {"FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "FP16": "TYPE_FP16"}
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "schedule_policy", "parameters"]


def check_model(service: ModelService, request: Request) -> None:
    """The model (and version) the request's path names is the one this server serves."""
    name = request.path_params["model"]
    if name != service.name:
        raise NotFound(f"unknown model {name!r}; this server serves {service.name!r}")
    version = request.path_params.get("version")
    if version is not None and version != service.version:
        raise NotFound(f"model {service.name!r} has no version {version!r} (only {service.version!r})")


def classes_of(service) -> tuple[str, ...]:
    """A classifier's class order: the service's own `classes` (the cloud server's model), else its package's."""
    classes = getattr(service, "classes", None)
    if classes is None:
        manifest = getattr(service, "manifest", None)
        classes = manifest.model.classes if manifest is not None else ()
    return tuple(classes or ())


def statistics_of(service) -> dict:
    """One model's entry in Triton's statistics response (all zero for a service that keeps none)."""
    stats = getattr(service, "statistics", None) or ModelStatistics()
    return stats.to_triton(service.name, str(service.version))


def readiness_of(service) -> dict:
    # A service may say which of its paths can answer (the gateway: edge and cloud); the protocol's `ready`
    # stays the one verdict.
    fn = getattr(service, "readiness", None)
    return fn() if callable(fn) else {}


class SingleModel:
    """The models a plain server serves: one, at one version."""

    extensions: tuple[str, ...] = ()

    def __init__(self, service: ModelService):
        self.service = service
        self.metrics = service.metrics
        self.name = service.name

    async def resolve(self, request: Request, for_infer: bool = False) -> ModelService:
        check_model(self.service, request)
        return self.service

    def ready(self) -> bool:
        return self.service.ready()

    def readiness(self) -> dict:
        return readiness_of(self.service)

    def all_services(self) -> list:
        return [self.service]

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()


class InfoRoutes:
    def __init__(self, models, options: ServerOptions):
        self.models = models  # SingleModel, or an edge node's repository (node_app.NodeModels)
        self.options = options

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ok = self.models.ready()
        return JSONResponse({"ready": ok, **self.models.readiness()}, status_code=200 if ok else 503)

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": self.options.server_name, "version": self.options.server_version,
                             "extensions": [*EXTENSIONS, *self.models.extensions]})

    async def model_metadata(self, request: Request) -> Response:
        s = await self.models.resolve(request)
        output = {"name": s.output.name, "datatype": s.output.datatype, "shape": [-1, *s.output.shape]}
        # the class order lets a peer check that it reads the answers the way they are meant (cloud_contract.py)
        parameters = classes_parameter(classes_of(s))
        return JSONResponse({
            "name": s.name,
            "versions": list(getattr(s, "versions", None) or [s.version]),
            "platform": s.platform,
            "inputs": [{"name": s.input.name, "datatype": s.input.datatype, "shape": [-1, *s.input.shape]}],
            "outputs": [{**output, "parameters": parameters} if parameters else output],
        })

    async def model_ready(self, request: Request) -> Response:
        s = await self.models.resolve(request)
        ok = s.ready()
        return JSONResponse({"name": s.name, "ready": ok, **readiness_of(s)}, status_code=200 if ok else 503)

    async def model_config(self, request: Request) -> Response:
        s = await self.models.resolve(request)
        batcher = getattr(s, "batcher", None)
        # Triton's max_batch_size is what one request may carry; the batcher's own cap is its preferred size.
        config = {
            "name": s.name,
            "platform": s.platform,
            "max_batch_size": self.options.max_request_rows,
            "input": [{"name": s.input.name, "data_type": TRITON_TYPES[s.input.datatype],
                       "dims": list(s.input.shape)}],
            "output": [{"name": s.output.name, "data_type": TRITON_TYPES[s.output.datatype],
                        "dims": list(s.output.shape)}],
            "version_policy": getattr(s, "version_policy", None) or (
                {"specific": {"versions": [int(s.version)]}} if s.version.isdigit() else {"latest": {"num_versions": 1}}),
        }
        batching = dynamic_batching_config(batcher.config if batcher is not None else None, s.request_timeout_s)
        if batching is not None:
            config["dynamic_batching"] = batching
        return JSONResponse(config)

    async def model_stats(self, request: Request) -> Response:
        s = await self.models.resolve(request)
        return JSONResponse({"model_stats": [statistics_of(s)]})

    async def all_stats(self, request: Request) -> Response:
        return JSONResponse({"model_stats": [statistics_of(s) for s in self.models.all_services()]})

    async def metrics(self, request: Request) -> Response:
        return Response(self.models.metrics.render(), media_type=CONTENT_TYPE_LATEST)
