"""Every failure the gRPC surface answers, as a gRPC status code with the same message the HTTP surface gives.

The serving errors carry an HTTP status (errors.py); this module maps that status to the gRPC code that means the
same to a caller (the mapping of google.rpc.Code: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 503 UNAVAILABLE, ...), so
the two surfaces classify every failure alike from one definition. Other LeptonErrors are INTERNAL like the HTTP
500, and so is anything unexpected, named as it broke.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from lepton_host.errors import LeptonError

from .errors import ServingError

CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,  # the model's present state refuses it (a version, a canary)
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,  # as gRPC itself answers a message over its size limit
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,  # the cloud did not answer well: retryable, like the HTTP 502
    503: grpc.StatusCode.UNAVAILABLE,  # no path can answer now, or the queue is full: back off and retry
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def code_for(status: int) -> grpc.StatusCode:
    """The gRPC code of an HTTP status; one not listed is INTERNAL (5xx) or FAILED_PRECONDITION (4xx)."""
    code = CODES.get(status)
    if code is not None:
        return code
    return grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.FAILED_PRECONDITION


@dataclass(frozen=True)
class Failure:
    status: int  # the HTTP status the same failure gets there (the requests metric's outcome)
    code: grpc.StatusCode
    message: str
    unexpected: bool = False  # a bug rather than a refusal: worth a traceback in the log


def failure_of(exc: Exception) -> Failure:
    if isinstance(exc, ServingError):
        return Failure(exc.status, code_for(exc.status), str(exc))
    if isinstance(exc, LeptonError):
        return Failure(500, grpc.StatusCode.INTERNAL, str(exc))
    return Failure(500, grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}", unexpected=True)
