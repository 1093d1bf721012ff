"""A circuit breaker for the cloud path: after `failure_threshold` consecutive failures it opens and the
gateway stops calling the cloud (fast failure instead of piling up timeouts); after `reset_timeout_s` it lets
`half_open_probes` requests through, and closes again on the first success."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the metric's encoding


@dataclass
class BreakerConfig:
    failure_threshold: int = 5
    reset_timeout_s: float = 5.0
    half_open_probes: int = 1


class CircuitBreaker:
    def __init__(self, config: BreakerConfig | None = None, on_change: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config or BreakerConfig()
        self._on_change = on_change
        self._clock = clock
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self.transitions: list[str] = []

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.config.reset_timeout_s:
            self._set(HALF_OPEN)
            self._probes_in_flight = 0
        return self._state

    def allow(self) -> bool:
        """May a request go out now? In half-open state this claims one of the probe slots."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and self._probes_in_flight < self.config.half_open_probes:
            self._probes_in_flight += 1
            return True
        return False

    def retry_after_s(self) -> float:
        if self._state != OPEN:
            return 0.0
        return max(0.0, self.config.reset_timeout_s - (self._clock() - self._opened_at))

    def record_success(self) -> None:
        self._failures = 0
        if self._state != CLOSED:
            self._probes_in_flight = 0
            self._set(CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        if self._state == HALF_OPEN or (self._state == CLOSED and self._failures >= self.config.failure_threshold):
            self._opened_at = self._clock()
            self._probes_in_flight = 0
            self._set(OPEN)

    def release_probe(self) -> None:
        """A probe ended without a verdict (cancelled): give its slot back."""
        if self._state == HALF_OPEN and self._probes_in_flight > 0:
            self._probes_in_flight -= 1

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.transitions.append(state)
            if self._on_change:
                self._on_change(state)
