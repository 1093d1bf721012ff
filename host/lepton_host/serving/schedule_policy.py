"""Per-request scheduling, as Triton's schedule-policy extension defines it: a request's `priority` (1 is the
highest of `PRIORITY_LEVELS`; 0 or none means the default level) orders it in the edge's batching queue, and
its `timeout` (microseconds) shortens the server's own request timeout (it never lengthens it). One definition
for the inference route, the batcher and the model configuration that advertises them (`/config`).
"""

from __future__ import annotations

from .errors import BadRequest

PRIORITY_LEVELS = 3
DEFAULT_PRIORITY = 2  # so a caller can ask to go ahead of ordinary traffic (1) or behind it (3)
MIN_TIMEOUT_S = 1e-3


def _uint(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest(f"parameters.{what} must be a non-negative integer, got {value!r}")
    try:
        f = float(value)
    except ValueError:
        raise BadRequest(f"parameters.{what} must be a non-negative integer, got {value!r}") from None
    if f < 0 or f != int(f):
        raise BadRequest(f"parameters.{what} must be a non-negative integer, got {value!r}")
    return int(f)


def priority_of(parameters: dict) -> int:
    """The request's priority level (1 = highest), the default level when it names none."""
    if "priority" not in parameters:
        return DEFAULT_PRIORITY
    p = _uint(parameters["priority"], "priority")
    if p == 0:
        return DEFAULT_PRIORITY
    if p > PRIORITY_LEVELS:
        raise BadRequest(f"parameters.priority {p} is beyond this model's {PRIORITY_LEVELS} priority levels "
                         f"(1 is the highest, {DEFAULT_PRIORITY} the default)")
    return p


def timeout_of(server_timeout_s: float, parameters: dict) -> float:
    """The server's request timeout, or the request's `timeout` (microseconds) when shorter."""
    if "timeout" not in parameters:
        return server_timeout_s
    us = _uint(parameters["timeout"], "timeout")
    return server_timeout_s if us == 0 else min(server_timeout_s, max(MIN_TIMEOUT_S, us / 1e6))


def dynamic_batching_config(batcher_config, request_timeout_s: float) -> dict | None:
    """Triton's `dynamic_batching` section for what the batcher does (None when it does not batch)."""
    if batcher_config is None or not batcher_config.dynamic:
        return None
    return {
        "preferred_batch_size": [batcher_config.max_batch_size],
        "max_queue_delay_microseconds": int(round(batcher_config.max_queue_delay_s * 1e6)),
        "priority_levels": PRIORITY_LEVELS,
        "default_priority_level": DEFAULT_PRIORITY,
        "default_queue_policy": {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": int(round(request_timeout_s * 1e6)),
            "allow_timeout_override": True,
            "max_queue_size": batcher_config.max_queue_size,
        },
    }
