"""Errors the serving layer turns into HTTP answers. Each carries the status code the protocol expects and a
message that says what the caller (or the operator) should do."""

from __future__ import annotations

from lepton_host.errors import LeptonError


class ServingError(LeptonError):
    status = 500


class BadRequest(ServingError):
    """The request is malformed or does not match the model's inputs (the caller must fix it)."""

    status = 400


class Unauthorized(ServingError):
    status = 401


class NotFound(ServingError):
    status = 404


class PayloadTooLarge(ServingError):
    status = 413


class Overloaded(ServingError):
    """The bounded queue is full: the caller should back off and retry."""

    status = 503


class Unavailable(ServingError):
    """No path can answer right now (board down and cloud down or its breaker open)."""

    status = 503


class DeadlineExceeded(ServingError):
    status = 504


class UpstreamError(ServingError):
    """The cloud server answered with an error or not at all."""

    status = 502

    def __init__(self, message: str, upstream_status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.upstream_status = upstream_status
        self.retryable = retryable

    @property
    def server_fault(self) -> bool:
        """Counts against the cloud's circuit breaker: no answer, a 5xx, a 429, or a malformed 200."""
        s = self.upstream_status
        return s is None or s >= 500 or s == 429 or s == 200


class EdgeUnavailable(ServingError):
    """The edge backend cannot take this work (unhealthy, stalled, or failed); the router sends it elsewhere."""

    status = 503


class Forbidden(ServingError):
    """The server is not set up to allow this (e.g. repository changes on a node started without a token)."""

    status = 403


class Conflict(ServingError):
    """The request cannot be carried out in the model's present state (a version refused, a canary running)."""

    status = 409


class RequestTimeout(ServingError):
    """The request body did not arrive in time."""

    status = 408


class UnsupportedMediaType(ServingError):
    status = 415


class InvalidOption(LeptonError):
    """A server option is out of range or malformed."""
