"""The HTTP surface of an edge node serving a model repository: the OIP routes over every model and version,
and the model-repository extension (index, load, unload) with two additions of ours, `push` (an over-the-air
package upload) and `info` (what the node serves, for `lepton-hls info URL`)."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse

from lepton_host.errors import LeptonError
from lepton_host.model_repository import RepositoryError
from lepton_host.package_transfer import TransferError, UploadTooLarge

from .app import create_models_app
from .errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, ServingError
from .model_service import ServerOptions
from .node import EdgeNode
from .versions import VersionedModel

REPOSITORY_EXTENSION = "model_repository"


class VersionView:
    """One version of a repository model, seen through the ModelService interface."""

    def __init__(self, model: VersionedModel, version: str):
        self._model, self.version = model, version

    def __getattr__(self, item):
        return getattr(self._model, item)

    async def infer(self, x, request, timeout_s):
        return await self._model.infer_version(self.version, x, request, timeout_s)


class NodeModels:
    """The OIP app's view of an edge node: every model by name, a version by number."""

    extensions = (REPOSITORY_EXTENSION,)

    def __init__(self, node: EdgeNode):
        self.node = node
        self.metrics = node.metrics
        self.name = ""  # the request-latency metric's model label: per-version answers are counted by lifecycle

    async def resolve(self, request: Request, for_infer: bool = False):
        model = self.node.model(request.path_params["model"])
        version = request.path_params.get("version")
        if version is None:
            return model
        if for_infer:
            await model.slot_for(version)  # 404 for a version that is not there; loads a standby one on demand
        elif version not in model.versions:
            raise NotFound(f"model {model.name!r} has no version {version!r} (versions: {', '.join(model.versions)})")
        return VersionView(model, version)

    def ready(self) -> bool:
        return bool(self.node.models) and all(m.ready() for m in self.node.models.values())

    def readiness(self) -> dict:
        return {"models": {n: m.readiness() for n, m in self.node.models.items()}}

    def all_services(self) -> list:
        return [m for m in self.node.models.values() if m.serving is not None]

    async def start(self) -> None:
        await self.node.start()

    async def stop(self) -> None:
        await self.node.stop()


def create_node_app(node: EdgeNode, options: ServerOptions | None = None):
    opts = options or ServerOptions()

    def repository_routes(route):
        r = RepositoryRoutes(node, opts)
        base = "/v2/repository"
        return [
            route(base + "/index", r.index, "repository_index", methods=["POST"]),
            route(base + "/models/{model}/load", r.load, "repository_load", methods=["POST"]),
            route(base + "/models/{model}/unload", r.unload, "repository_unload", methods=["POST"]),
            route(base + "/models/{model}/push", r.push, "repository_push", methods=["POST"]),
            route(base + "/info", r.info, "repository_info", methods=["GET"]),
        ]

    return create_models_app(NodeModels(node), opts, extra_routes=repository_routes)


class RepositoryRoutes:
    def __init__(self, node: EdgeNode, options: ServerOptions):
        self.node = node
        self.options = options

    def _require_token(self) -> None:
        # The routes are behind the bearer-token middleware when a token is set; without one, changing what the
        # node serves is not offered at all.
        if not self.options.token:
            raise Forbidden("repository changes need a token: start the node with LEPTON_HLS_TOKEN (or --token)")

    async def index(self, request: Request) -> JSONResponse:
        self._require_token()
        return JSONResponse(self.node.index())

    async def load(self, request: Request) -> JSONResponse:
        self._require_token()
        params = await _parameters(request)
        version = _int_param(params, "version")
        canary = params.get("canary")
        if canary is not None and (isinstance(canary, bool) or not isinstance(canary, (int, float))):
            raise BadRequest("parameters.canary must be a percentage of traffic")
        return await _changed(self.node.load(request.path_params["model"], version, canary))

    async def unload(self, request: Request) -> JSONResponse:
        self._require_token()
        params = await _parameters(request)
        return await _changed(self.node.unload(request.path_params["model"], _int_param(params, "version")))

    async def push(self, request: Request) -> JSONResponse:
        self._require_token()
        declared = request.headers.get("content-length")
        length = int(declared) if declared and declared.isdigit() else None
        canary = request.query_params.get("canary")
        try:
            canary_pct = None if canary is None else float(canary)
        except ValueError:
            raise BadRequest(f"canary={canary!r} is not a percentage") from None
        try:
            result = await self.node.push(request.path_params["model"], request.stream(), length, canary_pct)
        except UploadTooLarge as e:
            raise PayloadTooLarge(str(e)) from None
        except TransferError as e:
            raise BadRequest(str(e)) from None
        except RepositoryError as e:
            raise Conflict(str(e)) from None
        return JSONResponse(result)

    async def info(self, request: Request) -> JSONResponse:
        self._require_token()
        return JSONResponse(self.node.describe())


async def _changed(coro) -> JSONResponse:
    try:
        return JSONResponse(await coro)
    except ServingError:
        raise
    except LeptonError as e:  # a refused version (RepositoryError) or a backend that would not open
        raise Conflict(str(e)) from None


async def _parameters(request: Request) -> dict:
    body = await request.body()
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"request body is not JSON: {e}") from None
    params = doc.get("parameters", {}) if isinstance(doc, dict) else None
    if not isinstance(params, dict):
        raise BadRequest('the body must be {"parameters": {...}}')
    return params


def _int_param(params: dict, key: str) -> int | None:
    v = params.get(key)
    if v is None:
        return None
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise BadRequest(f"parameters.{key} must be a version number (1, 2, ...)")
    return v
