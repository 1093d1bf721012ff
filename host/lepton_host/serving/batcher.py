"""Dynamic batching in front of one backend, Triton-style: requests wait at most `max_queue_delay_s` for
company, up to `max_batch_size` samples go to the backend in one call, the queue is bounded (a full queue
refuses at once instead of growing), and one call that runs past `compute_timeout_s` marks the backend stalled
so new work goes elsewhere until it returns.

The backend runs in one worker thread: a board serves one DMA transfer at a time, and the event loop must stay
free to answer other requests (and the cloud path) while it works.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lepton_host.errors import LeptonError

from .errors import EdgeUnavailable, Overloaded
from .schedule_policy import DEFAULT_PRIORITY


@dataclass
class BatcherConfig:
    max_batch_size: int = 64
    max_queue_delay_s: float = 0.0005
    max_queue_size: int = 256  # requests waiting, not counting the batch in flight
    compute_timeout_s: float = 1.0
    # A backend whose calls take less than this runs on the event loop itself: handing a 50 us call to a
    # worker thread and back costs more than the call. After any failure it goes back to the worker thread
    # (where a hang cannot block the server) for `inline_cooldown_s`. 0 disables.
    inline_max_s: float = 0.002
    inline_cooldown_s: float = 5.0
    # False: every request runs alone (no coalescing, whatever is queued); `max_batch_size` then only caps
    # nothing, and the model configuration states no dynamic batching.
    dynamic: bool = True


@dataclass(slots=True)
class BatchResult:
    y: np.ndarray
    queue_s: float
    compute_s: float
    batch_size: int


class _Item:
    __slots__ = ("x", "n", "future", "enqueued", "priority")

    def __init__(self, x: np.ndarray, future: asyncio.Future, priority: int):
        self.x = x
        self.n = x.shape[0]
        self.future = future
        self.enqueued = time.perf_counter()
        self.priority = priority  # 1 is the highest (schedule_policy.py)


class _Ran:
    """One batch's backend call: its input, its answer or error, when it started and how long it took."""

    __slots__ = ("x", "y", "err", "start", "compute_s", "call", "inline")

    def __init__(self, x: np.ndarray, y, err: Exception | None, start: float, compute_s: float,
                 call: asyncio.Future | None, inline: bool):
        self.x, self.y, self.err, self.start, self.compute_s = x, y, err, start, compute_s
        self.call = call  # the worker thread's call; None when the batch ran on the event loop
        self.inline = inline


class DynamicBatcher:
    def __init__(self, predict: Callable[[np.ndarray, float | None], np.ndarray], config: BatcherConfig,
                 name: str = "edge", on_batch: Callable[[int, float, float], None] | None = None):
        self._predict = predict
        self.config = config
        self.name = name
        self._on_batch = on_batch  # (batch size, queue seconds of the oldest, compute seconds)
        self._queue: collections.deque[_Item] = collections.deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-backend")
        self._busy_since: float | None = None
        self._compute_ewma_s = 0.0
        self._inline_blocked_until = 0.0
        self._exclusive = 0  # maintenance calls (reset, self-test) running on the worker thread
        self.last_error: str = ""

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"{self.name}-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(EdgeUnavailable(f"{self.name} batcher stopped"))
        # A thread stuck in a hung backend cannot be joined; do not wait for it.
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- state the router reads -----------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def stalled(self) -> bool:
        return self._busy_since is not None and time.perf_counter() - self._busy_since > self.config.compute_timeout_s

    def estimated_wait_s(self) -> float:
        """How long new work would queue before its own batch starts: the batches ahead of it (full ones of
        what is queued, plus the one in flight) times the recent per-batch compute time. An idle backend has
        no wait, so it is always tried again and its compute estimate stays current."""
        batches_ahead = (self._queued_rows // self.config.max_batch_size if self.config.dynamic
                         else len(self._queue))
        in_flight = 1 if self._busy_since is not None else 0
        return (batches_ahead + in_flight) * self._compute_ewma_s

    # ---- work ------------------------------------------------------------------------------------------
    async def run_exclusive(self, fn: Callable, *args, timeout_s: float | None = None):
        """Run `fn(*args)` (a DMA reset, a self-test) on the backend's own worker thread, so that it never
        overlaps a batch: batches queue behind it and no batch runs inline on the event loop meanwhile.
        `timeout_s`: raise TimeoutError when it has not returned by then (the thread is not interrupted)."""
        self._exclusive += 1
        try:
            call = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
            return await asyncio.wait_for(asyncio.shield(call), timeout_s)
        finally:
            self._exclusive -= 1

    def submit(self, x: np.ndarray, priority: int = DEFAULT_PRIORITY) -> asyncio.Future:
        """Queue `x` (N, ...) behind the requests of its priority or a higher one, and return a future of
        BatchResult. Raises Overloaded when the queue is full and EdgeUnavailable when the backend is
        stalled."""
        if self.stalled:
            raise EdgeUnavailable(
                f"{self.name} backend has not answered for {self.config.compute_timeout_s:.3g} s (hung?)"
            )
        if len(self._queue) >= self.config.max_queue_size:
            raise Overloaded(
                f"{self.name} queue is full ({self.config.max_queue_size} requests waiting); retry later"
            )
        fut = asyncio.get_running_loop().create_future()
        item = _Item(x, fut, priority)
        q = self._queue
        if not q or q[-1].priority <= priority:  # the common case: one level, or the lowest
            q.append(item)
        else:
            i = len(q)
            while i > 0 and q[i - 1].priority > priority:
                i -= 1
            q.insert(i, item)
        self._queued_rows += x.shape[0]
        self._wakeup.set()
        return fut

    def try_direct(self, x: np.ndarray) -> BatchResult | None:
        """Run `x` at once in the caller's task when nothing would be gained by queueing: the backend is idle
        and fast (inline-eligible), nothing waits, and no batching window applies (no delay configured, or `x`
        fills a batch by itself). None: use `submit`."""
        cfg = self.config
        if (self._queue or self._busy_since is not None or self._exclusive
                or not 0 < self._compute_ewma_s < cfg.inline_max_s
                or (cfg.dynamic and cfg.max_queue_delay_s > 0 and x.shape[0] < cfg.max_batch_size)):
            return None
        start = time.perf_counter()
        if start < self._inline_blocked_until:
            return None
        self._busy_since = start
        try:
            y, err, compute_s = self._call_inline(x, start)
        finally:
            self._busy_since = None
        if err is not None or y.shape[0] != x.shape[0]:
            raise self._checked(x, y, err)
        self._succeeded(x.shape[0], 0.0, compute_s)
        return BatchResult(y, 0.0, compute_s, x.shape[0])

    def _checked(self, x: np.ndarray, y, err):
        """The call's error, or a wrong row count turned into one; any failure starts the inline cooldown."""
        if err is None and y.shape[0] != x.shape[0]:
            err = EdgeUnavailable(f"{self.name} backend returned {y.shape[0]} rows for {x.shape[0]}")
        if err is not None:
            self._inline_blocked_until = time.perf_counter() + self.config.inline_cooldown_s
            self.last_error = str(err)
        return err

    def _succeeded(self, n: int, queue_s: float, compute_s: float) -> None:
        self.last_error = ""
        ewma = self._compute_ewma_s
        self._compute_ewma_s = compute_s if ewma == 0 else 0.8 * ewma + 0.2 * compute_s
        if self._on_batch:
            self._on_batch(n, queue_s, compute_s)

    def _pop(self) -> _Item | None:
        while self._queue:
            item = self._queue.popleft()
            self._queued_rows -= item.n
            if not item.future.done():  # skip requests whose caller already gave up
                return item
        return None

    async def _collect(self) -> list[_Item]:
        while True:
            first = self._pop()
            if first is not None:
                break
            self._wakeup.clear()
            await self._wakeup.wait()
        batch, rows = [first], first.n
        if not self.config.dynamic:
            return batch
        cap = self.config.max_batch_size
        deadline = first.enqueued + self.config.max_queue_delay_s
        timer = None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self._wakeup.set()

        try:
            while rows < cap:
                if self._queue:
                    if rows + self._queue[0].n > cap:
                        break
                    item = self._pop()
                    if item is not None:
                        batch.append(item)
                        rows += item.n
                    continue
                remaining = deadline - time.perf_counter()
                if expired or remaining <= 0:
                    break
                # A timer that sets the same event a new request sets: cheaper than wait_for, which would
                # wrap every wait in a task of its own. The loop's clock may fire it a little early, hence
                # the flag rather than the clock decides that the window is over.
                if timer is None:
                    timer = asyncio.get_running_loop().call_later(remaining, expire)
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            if timer is not None:
                timer.cancel()
        return batch

    async def _run(self) -> None:
        """The worker: collect a batch, run it, hand each request its rows (or the batch's error)."""
        while True:
            batch = await self._collect()
            ran = await self._compute(batch)
            if ran.err is not None:
                await self._fail(batch, ran)
                continue
            self._deliver(batch, ran)
            if ran.inline:
                # An inline batch never awaited: without a turn for the loop here, a long queue is drained
                # batch after batch before any other request is even read, and a full queue's refusals
                # (which take microseconds) wait for all of it.
                await asyncio.sleep(0)

    async def _compute(self, batch: list[_Item]) -> _Ran:
        """One backend call for the whole batch: on the event loop itself when the backend is fast and nothing
        else uses it, else on the worker thread. The backend is busy from here until the batch is delivered or
        failed."""
        cfg = self.config
        x = batch[0].x if len(batch) == 1 else np.concatenate([b.x for b in batch], axis=0)
        start = time.perf_counter()
        self._busy_since = start
        call = None
        inline = (0 < self._compute_ewma_s < cfg.inline_max_s and start >= self._inline_blocked_until
                  and not self._exclusive)
        if inline:
            y, err, compute_s = self._call_inline(x, start)
        else:
            call = asyncio.get_running_loop().run_in_executor(self._executor, self._predict, x, cfg.compute_timeout_s)
            y, err = await self._await_call(call, x.shape[0])
            compute_s = time.perf_counter() - start
        return _Ran(x, y, self._checked(x, y, err), start, compute_s, call, inline)

    async def _fail(self, batch: list[_Item], ran: _Ran) -> None:
        for b in batch:
            if not b.future.done():
                b.future.set_exception(ran.err)
        call = ran.call
        if call is not None and not call.done():
            # Hung: fail what is queued (it would only wait), then wait for the thread to come back.
            while self._queue:
                item = self._pop()
                if item is not None:
                    item.future.set_exception(ran.err)
            try:
                await call
            except Exception:
                pass
        elif call is not None and not call.cancelled():
            call.exception()  # retrieved: the error is reported through `err`
        self._busy_since = None

    def _deliver(self, batch: list[_Item], ran: _Ran) -> None:
        self._busy_since = None
        n = ran.x.shape[0]
        self._succeeded(n, ran.start - batch[0].enqueued, ran.compute_s)
        offset = 0
        for b in batch:
            if not b.future.done():
                rows = ran.y[offset : offset + b.n]
                b.future.set_result(BatchResult(rows, ran.start - b.enqueued, ran.compute_s, n))
            offset += b.n

    def _call_inline(self, x: np.ndarray, start: float):
        """-> (answer, error, seconds since `start`)."""
        try:
            y, err = self._predict(x, self.config.compute_timeout_s), None
        except Exception as e:
            y, err = None, EdgeUnavailable(f"{self.name} backend failed: {e}")
        end = time.perf_counter()
        if end - start > 10 * self.config.inline_max_s:  # it got slow: back to the thread
            self._inline_blocked_until = end + self.config.inline_cooldown_s
        return y, err, end - start

    async def _await_call(self, call: asyncio.Future, n: int):
        # The backend was given compute_timeout_s itself; this guard, a little later, is for one that ignores it.
        guard = self.config.compute_timeout_s * 1.2 + 0.05
        try:
            return await asyncio.wait_for(asyncio.shield(call), guard), None
        except asyncio.TimeoutError:
            return None, EdgeUnavailable(
                f"{self.name} backend did not answer a batch of {n} within {self.config.compute_timeout_s:.3g} s "
                "(board hung?)"
            )
        except LeptonError as e:
            return None, EdgeUnavailable(f"{self.name} backend failed: {e}")
        except Exception as e:  # a backend bug must not kill the worker
            return None, EdgeUnavailable(f"{self.name} backend raised {type(e).__name__}: {e}")
