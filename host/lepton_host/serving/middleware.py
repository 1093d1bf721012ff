"""Pure ASGI middleware of the OIP app (no BaseHTTPMiddleware: it wraps every request in extra tasks and
streams, and the edge path answers in tens of microseconds).

`RequestMetrics` (around the whole app): counts each request a route answered by route and outcome, observes
the latency of successful inferences, closes the connection after an error answered before the request body
was read (the rest of it may never come, or come slowly), and answers a failure no error handler claims as a
500 like any other error. `BearerToken` (per route, on the routes that need it): refuses a request without
the server's token; the error handlers answer the refusal.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable

from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .error_responses import CLIENT_CLOSED, internal_error_response
from .errors import Unauthorized
from .metrics import ServingMetrics

BODY_READ = "lepton.body_read"  # scope key: the request body was read to its end
CLIENT_DISCONNECTED = "client_disconnected"  # the requests metric's outcome for a caller that went away


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
                if (status >= 400 and status != CLIENT_CLOSED and scope["method"] == "POST"
                        and not scope.get(BODY_READ) and self._route(scope) is not None):
                    message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
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
        outcome = "ok" if status < 400 else CLIENT_DISCONNECTED if status == CLIENT_CLOSED else str(status)
        self.metrics.child(self.metrics.requests, route, outcome).inc()


class BearerToken:
    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not hmac.compare_digest(_authorization(scope), self._expected):
            raise Unauthorized("missing or wrong bearer token (send 'Authorization: Bearer <token>')")
        await self.app(scope, receive, send)


def _authorization(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"authorization":
            # Header values are Latin-1 on the wire; the token is compared as text, in UTF-8.
            return value.decode("latin-1").encode()
    return b""
