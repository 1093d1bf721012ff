"""Pure ASGI middleware of the OIP app (no BaseHTTPMiddleware: it wraps every request in extra tasks and
streams, and the edge path answers in tens of microseconds).

`RequestMetrics` (around the whole app): counts each request a route answered by route and outcome, observes
the latency of successful inferences, closes the connection after an error answered before the request body
was read (the rest of it may never come, or come slowly), and answers a failure no error handler claims as a
500 like any other error. `BearerToken` (per route, on the routes that need it): refuses a request without
the server's token; the error handlers answer the refusal.

`InferFront` (ahead of Starlette's router): takes the inference route's requests (POST to
/v2/models/{model}[/versions/{version}]/infer, matched by splitting the path, not by trying a dozen route
patterns) straight to the route's raw ASGI entrance, with the same token, counting, latency, error answers and
connection rule as the middleware above; everything else goes to the router.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .error_responses import CLIENT_CLOSED, EXCEPTION_HANDLERS, internal_error_response
from .errors import Unauthorized
from .metrics import ServingMetrics

BODY_READ = "lepton.body_read"  # scope key: the request body was read to its end
CLIENT_DISCONNECTED = "client_disconnected"  # the requests metric's outcome for a caller that went away
CONNECTION_CLOSE = (b"connection", b"close")


def outcome_of(status: int) -> str:
    """The requests metric's outcome label for a response status."""
    return "ok" if status < 400 else CLIENT_DISCONNECTED if status == CLIENT_CLOSED else str(status)


def closes_connection(status: int, scope: Scope) -> bool:
    """An error answered to a POST before its body was read closes the connection: the rest of the body may never
    come, or come slowly."""
    return status >= 400 and status != CLIENT_CLOSED and scope["method"] == "POST" and not scope.get(BODY_READ)


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: ServingMetrics, routes: Iterable[Route], timed_route: str,
                 model: str):
        self.app = app
        self.metrics = metrics
        # The router leaves the matched route's endpoint in the scope. A route that matched the path but not
        # the method (a 405) left it there too, and is not counted: the route did not answer.
        self._routes = {r.endpoint: (r.name, r.methods) for r in routes}
        self._timed_route = timed_route
        self._model = model

    def _route(self, scope: Scope) -> str | None:
        entry = self._routes.get(scope.get("endpoint"))
        if entry is None:
            return None
        name, methods = entry
        return name if methods is None or scope["method"] in methods else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if closes_connection(status, scope) and self._route(scope) is not None:
                    message = {**message, "headers": [*message.get("headers", ()), CONNECTION_CLOSE]}
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:
            if status:  # the answer had begun: nothing more can be said to the caller
                self._count(self._route(scope), 500)
                raise
            # A failure no error handler claims (a bug): answered here, in the same JSON shape, so the server
            # keeps the connection and keeps serving.
            await internal_error_response(exc)(scope, receive, send_and_note)
        route = self._route(scope)
        self._count(route, status)
        if route == self._timed_route and status < 400:
            self.metrics.child(self.metrics.request_latency, self._model).observe(time.perf_counter() - start)

    def _count(self, route: str | None, status: int) -> None:
        if route is None:
            return
        self.metrics.child(self.metrics.requests, route, outcome_of(status)).inc()


class BearerToken:
    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self._expected = expected_authorization(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            check_token(scope, self._expected)
        await self.app(scope, receive, send)


def expected_authorization(token: str) -> bytes:
    return f"Bearer {token}".encode()


def check_token(scope: Scope, expected: bytes) -> None:
    if not hmac.compare_digest(_authorization(scope), expected):
        raise Unauthorized("missing or wrong bearer token (send 'Authorization: Bearer <token>')")


def _authorization(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"authorization":
            # Header values are Latin-1 on the wire; the token is compared as text, in UTF-8.
            return value.decode("latin-1").encode()
    return b""


INFER_PREFIX, INFER_SUFFIX = "/v2/models/", "/infer"


class InferFront:
    """The inference route's requests, ahead of the router (see the module docstring). `answer(scope, receive)`
    -> (body, raw headers) is the route's raw entrance (routes_infer.InferRoute.answer); `route` its label in the
    requests metric; `model` the latency metric's model label."""

    def __init__(self, answer, metrics: ServingMetrics, route: str, model: str, token: str | None):
        self._answer = answer
        self._route = route
        self._expected = expected_authorization(token) if token else None
        self._ok = metrics.child(metrics.requests, route, "ok")
        self._latency = metrics.child(metrics.request_latency, model)
        self._metrics = metrics

    @staticmethod
    def path_params(scope: Scope) -> dict | None:
        """The model (and version) of an inference request this front takes; None: the router's."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        path = scope["path"]
        if not (path.startswith(INFER_PREFIX) and path.endswith(INFER_SUFFIX)):
            return None
        parts = path[len(INFER_PREFIX):-len(INFER_SUFFIX)].split("/")
        if len(parts) == 1 and parts[0]:
            return {"model": parts[0]}
        if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
            return {"model": parts[0], "version": parts[2]}
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path_params: dict) -> None:
        start = time.perf_counter()
        scope["path_params"] = path_params
        try:
            if self._expected is not None:
                check_token(scope, self._expected)
            body, headers = await self._answer(scope, receive)
        except Exception as exc:
            await self._refuse(scope, receive, send, exc)
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except Exception:
            self._count(500)  # the answer had begun: nothing more can be said to the caller
            raise
        self._ok.inc()
        self._latency.observe(time.perf_counter() - start)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """The error answer the app's handlers give (a failure none claims: a 500 in the same JSON shape)."""
        handler = next((EXCEPTION_HANDLERS[c] for c in type(exc).__mro__ if c in EXCEPTION_HANDLERS), None)
        response = internal_error_response(exc) if handler is None else await handler(Request(scope), exc)
        if closes_connection(response.status_code, scope):
            response.raw_headers.append(CONNECTION_CLOSE)
        await response(scope, receive, send)
        self._count(response.status_code)

    def _count(self, status: int) -> None:
        self._metrics.child(self._metrics.requests, self._route, outcome_of(status)).inc()
