"""Every error the HTTP surface answers, as the OIP JSON body `{"error": message}` with its status: the
gateway's own error types (errors.py) with their status, other LeptonErrors as 500, a caller that went away
as 499, Starlette's routing errors (404, 405) naming the request, and anything else as a 500 that says what
broke. Registered as the app's exception handlers (and the last one used by middleware.RequestMetrics)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from lepton_host.errors import LeptonError

from .errors import ServingError

CLIENT_CLOSED = 499  # nginx's status for a request whose client went away before the answer


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
    return error_response(exc.status, str(exc))


async def lepton_error(request: Request, exc: LeptonError) -> JSONResponse:
    return error_response(500, str(exc))


async def client_disconnected(request: Request, exc: ClientDisconnect) -> JSONResponse:
    return error_response(CLIENT_CLOSED, "client closed the request")  # not a fault of ours: no one reads it


async def routing_error(request: Request, exc: HTTPException) -> JSONResponse:
    return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")


def internal_error_response(exc: Exception) -> JSONResponse:
    return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    return internal_error_response(exc)


EXCEPTION_HANDLERS = {
    ServingError: serving_error,
    LeptonError: lepton_error,
    ClientDisconnect: client_disconnected,
    HTTPException: routing_error,
    # Starlette's outermost layer, for failures outside the routes (RequestMetrics answers those in them): after
    # answering, the server logs the traceback and closes the connection.
    Exception: internal_error,
}
