"""Whether the edge may serve: the gateway's view of its board, and the loop that brings a board back.

The edge is IN service or OUT of it. It goes out after `probe_failures` consecutive failed health probes (one
probe that misses its deadline on a loaded CPU is not a failure of the board), at once after one failed batch
(a DeviceError, an IntegrityError, a hang), or when the audit finds a wrong answer. While it is out, every
step resets the board (a DMA left halted by a fault, or by a device that went missing and came back, is never
reset by traffic, because no traffic goes to an edge that is out) and runs its golden-vector self-test; only a
passing self-test brings it back. A backend without a self-test (or a package without golden vectors and a
fast engine, `passed is None`) comes back on a healthy probe instead, no sooner than `retry_s` after it went
out, so a board that hangs costs one timeout per `retry_s`, not one per batch.

`step()` is one probe or one recovery attempt; the gateway's health loop calls it every interval, tests call
it directly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

IN, OUT = "in_service", "out_of_service"


@dataclass
class MonitorConfig:
    probe_failures: int = 3  # consecutive failed health probes before the edge is taken out
    probe_timeout_s: float = 0.5  # a health() call that has not answered by then is a failed probe
    self_test_timeout_s: float = 5.0  # a reset or self-test that has not returned by then failed
    retry_s: float = 1.0  # least time out of service before a recovery that only a health probe vouches for


@dataclass(frozen=True)
class EdgeState:
    """What readiness and the metrics report about the edge."""

    state: str  # IN | OUT
    detail: str  # why it is out, or what brought it back
    since: float  # the clock's time of the last change
    recoveries: int
    outages: int


def _reset_of(backend) -> Callable[[], object] | None:
    """The backend's DMA reset: `backend.reset()`, else that of the board runtime it wraps."""
    fn = getattr(backend, "reset", None)
    if callable(fn):
        return fn
    fn = getattr(getattr(backend, "accelerator", None), "reset", None)
    return fn if callable(fn) else None


class EdgeMonitor:
    def __init__(self, backend, config: MonitorConfig | None = None,
                 run_exclusive: Callable[..., Awaitable] | None = None,
                 on_change: Callable[[EdgeState], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self.config = config or MonitorConfig()
        self._run = run_exclusive or self._in_thread
        self._on_change = on_change
        self._clock = clock
        self._state = IN
        self._detail = ""
        self._attempt = ""  # what the last recovery attempt found
        self._since = clock()
        self._failed_probes = 0
        self.recoveries = 0
        self.outages = 0
        self.last_self_test = None  # the last SelfTestResult seen
        self.probe_detail = ""

    @staticmethod
    async def _in_thread(fn, *args, timeout_s: float | None = None):
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout_s)

    # ---- what the router and readiness read ------------------------------------------------------------------
    @property
    def in_service(self) -> bool:
        return self._state == IN

    @property
    def detail(self) -> str:
        if self._state == OUT and self._attempt:
            return f"{self._detail}; last recovery attempt: {self._attempt}"
        return self._detail

    def snapshot(self) -> EdgeState:
        return EdgeState(self._state, self.detail, self._since, self.recoveries, self.outages)

    # ---- events ------------------------------------------------------------------------------------------------
    def take_out(self, why: str) -> None:
        """Out of service now (a failed batch, a wrong answer, too many failed probes). Idempotent."""
        if self._state == OUT:
            return
        self._state, self._detail, self._attempt, self._since = OUT, why, "", self._clock()
        self.outages += 1
        self._changed()

    def _readmit(self, why: str) -> None:
        self._state, self._detail, self._attempt, self._since = IN, why, "", self._clock()
        self._failed_probes = 0
        self.recoveries += 1
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.snapshot())

    # ---- the health loop's one step ----------------------------------------------------------------------
    async def step(self) -> None:
        if self._state == IN:
            await self._probe_once()
        else:
            await self.try_recover()

    async def probe(self) -> tuple[bool, str]:
        """One health() call in a thread, bounded by `probe_timeout_s`: (ok, detail)."""
        try:
            h = await asyncio.wait_for(asyncio.to_thread(self.backend.health), self.config.probe_timeout_s)
            return bool(h.ok), str(h.detail)
        except asyncio.TimeoutError:
            return False, f"health probe did not answer within {self.config.probe_timeout_s:.3g} s"
        except Exception as e:
            return False, f"health probe failed: {type(e).__name__}: {e}"

    async def _probe_once(self) -> None:
        ok, detail = await self.probe()
        self.probe_detail = detail
        if ok:
            self._failed_probes = 0
            return
        self._failed_probes += 1
        if self._failed_probes >= self.config.probe_failures:
            self.take_out(f"{self._failed_probes} consecutive failed health probes: {detail}")

    async def try_recover(self) -> bool:
        """Reset the board and run its self-test; back in service when it passes. -> in service now."""
        if self._state == IN:
            return True
        cfg = self.config
        reset = _reset_of(self.backend)
        if reset is not None:
            try:
                await self._run(reset, timeout_s=cfg.self_test_timeout_s)
            except asyncio.TimeoutError:
                self._attempt = f"the reset did not return within {cfg.self_test_timeout_s:.3g} s"
                return False
            except Exception as e:  # still missing, most often: stay out and say so
                self._attempt = f"reset failed: {type(e).__name__}: {e}"
                return False
        self_test = getattr(self.backend, "self_test", None)
        verdict = None
        if callable(self_test):
            try:
                result = await self._run(self_test, timeout_s=cfg.self_test_timeout_s)
            except asyncio.TimeoutError:
                self._attempt = f"self-test did not return within {cfg.self_test_timeout_s:.3g} s"
                return False
            except Exception as e:
                self._attempt = f"self-test raised {type(e).__name__}: {e}"
                return False
            self.last_self_test = result
            verdict = getattr(result, "passed", None)
            if verdict is True:
                self._readmit(f"self-test passed after reset: {result.detail}")
                return True
            if verdict is False:
                self._attempt = f"self-test failed: {result.detail}"
                return False
            note = f"no self-test verdict ({result.detail})"
        else:
            note = "backend has no self-test"
        # No verdict to wait for: a healthy probe, once the board has been out for retry_s, is all there is.
        if self._clock() - self._since < cfg.retry_s:
            return False
        ok, detail = await self.probe()
        if ok:
            self._readmit(f"health probe ok after reset; {note}")
            return True
        self._attempt = f"{detail}"
        return False
