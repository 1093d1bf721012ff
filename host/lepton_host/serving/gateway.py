"""The edge gateway: requests arrive here and are preprocessed; the routing plan (routing.py, from the
request's facts: edge health, queue, input range, policy) says which samples the accelerator answers through
the dynamic batcher and which (or, for the cascade, which in addition) the cloud; plan_executor.py carries it
out on the paths this module owns. The caller sees one protocol and one answer; the response's parameters say
which path answered and why.

Failure handling: a failed or hung edge batch (a DeviceError, an IntegrityError) falls back to the cloud and
takes the edge out of service until the health loop has reset the board and its self-test passed
(edge_monitor.py); a failed cloud call falls back to the edge's own answer (marked degraded) when there is one;
when neither path can answer the caller gets one 503 naming both causes. A sample of the edge's answers is
re-computed off the request path on the package's bit-exact emulator (audit.py); a mismatch takes the edge out
too. Imports no TensorFlow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from lepton_host.backend import Backend
from lepton_host.manifest import Manifest

from . import routing as R
from .app import ServerOptions, TensorInfo, create_app
from .audit import AuditConfig, Auditor, AuditUnavailable, make_reference
from .batcher import BatcherConfig, DynamicBatcher
from .cloud_client import CloudClient, CloudConfig
from .edge_monitor import IN, EdgeMonitor, EdgeState, MonitorConfig
from .errors import DeadlineExceeded, ServingError, Unavailable
from .metrics import ServingMetrics
from .oip import InferRequest
from .plan_executor import Outcome, execute
from .schedule_policy import DEFAULT_PRIORITY, priority_of
from .statistics import ModelStatistics


@dataclass
class GatewayConfig:
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    policy: R.RoutingPolicy = field(default_factory=R.RoutingPolicy)
    cloud: CloudConfig | None = None
    request_timeout_s: float = 5.0
    health_interval_s: float = 0.5  # how often the board's health() is asked (it may touch registers)
    # After the edge went out, the least time before a health probe alone may bring it back (a backend without
    # a self-test), so a hung board costs one timeout, not one per batch. A passing self-test needs no wait.
    edge_retry_s: float = 1.0
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    # Audit of edge answers on the package's fast engine (needs package_dir); None: no audit.
    audit: AuditConfig | None = field(default_factory=AuditConfig)
    package_dir: str | None = None
    audit_engine: str = "fast"  # the bit-exact engine the audit re-computes answers on
    fault_schedule: object | None = None  # a fault_schedule.FaultSchedule to follow from start (emulated board)
    server: ServerOptions = field(default_factory=ServerOptions)


class EdgeService:
    platform = "lepton-hls_edge"
    version = "1"

    def __init__(self, manifest: Manifest, backend: Backend, config: GatewayConfig,
                 metrics: ServingMetrics | None = None):
        self.manifest = manifest
        self.backend = backend
        self.config = config
        self.name = manifest.model.name
        self.input = TensorInfo(manifest.input.name, tuple(manifest.input.shape))
        self.output = TensorInfo(manifest.output.name, tuple(manifest.output.shape))
        self.max_batch_size = config.batcher.max_batch_size
        self.max_queue_delay_s = config.batcher.max_queue_delay_s
        self.request_timeout_s = config.request_timeout_s
        # A repository node's versions share one registry; a single-package gateway has its own.
        self.metrics = metrics or ServingMetrics("lepton_gateway")
        m = self.metrics
        # The children every request updates, looked up once.
        self._queue_depth = m.child(m.queue_depth, self.name)
        self._queue_latency = m.child(m.queue_latency, self.name)
        self._batch_size = m.child(m.batch_size, self.name)
        self._compute_latency = m.child(m.compute_latency, self.name)
        self._uniform_counts: dict[tuple[str, str], tuple] = {}
        self.statistics = ModelStatistics()
        self.router = R.Router(config.policy, manifest)
        self.batcher = DynamicBatcher(backend.predict, config.batcher, name="edge", on_batch=self._on_batch)
        self.cloud: CloudClient | None = None
        if config.cloud is not None:
            self.cloud = CloudClient(config.cloud, self.name, self.input.name, self.output.name, self.metrics)
        self.monitor = EdgeMonitor(backend, dataclasses.replace(config.monitor, retry_s=config.edge_retry_s),
                                   run_exclusive=self.batcher.run_exclusive, on_change=self._edge_changed)
        self.metrics.edge_in_service.set(1)
        self.auditor: Auditor | None = None
        self.audit_note = ""  # why there is no audit although one was asked for
        if config.audit is not None and config.package_dir is not None:
            try:
                reference = make_reference(config.package_dir, manifest, config.audit_engine)
                self.auditor = Auditor(reference, config.audit, on_mismatch=self._audit_mismatch,
                                       on_count=self._audit_count)
                self.audit_note = ""
            except AuditUnavailable as e:
                self.audit_note = str(e)
        self.fault_schedule = config.fault_schedule
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health_task: asyncio.Task | None = None
        self._schedule_task: asyncio.Task | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._warm_up()
        self.batcher.start()
        await self._admit_at_start()
        if self.auditor is not None:
            self.auditor.start()
            self.auditor.start_window()
        self._health_task = self._loop.create_task(self._health_loop())
        if self.fault_schedule is not None:
            schedule = self.fault_schedule
            self.metrics.fault_schedule_start.set_function(lambda: schedule.started_at or 0.0)
            self._schedule_task = self._loop.create_task(schedule.run(self._fault_changed))

    async def stop(self) -> None:
        for task in (self._health_task, self._schedule_task):
            if task is not None:
                task.cancel()
        await self.batcher.stop()
        if self.auditor is not None:
            await asyncio.to_thread(self.auditor.stop)
        if self.cloud is not None:
            await self.cloud.close()

    async def _warm_up(self) -> None:
        """One call before serving, so first-call costs (buffer allocation, caches) do not land on a caller or
        skew the batcher's compute estimate. A board that fails here is reported by the health check."""
        x = np.zeros((1, *self.input.shape))
        try:
            await asyncio.wait_for(asyncio.to_thread(self.backend.predict, x, self.config.batcher.compute_timeout_s),
                                   self.config.batcher.compute_timeout_s)
        except Exception:
            pass

    async def _admit_at_start(self) -> None:
        """The board serves from the start only if it answers its health probe and passes its self-test."""
        ok, detail = await self.monitor.probe()
        if not ok:
            self.monitor.take_out(f"at start: {detail}")
            return
        self_test = getattr(self.backend, "self_test", None)
        if callable(self_test):
            try:
                result = await self.batcher.run_exclusive(self_test, timeout_s=self.monitor.config.self_test_timeout_s)
            except Exception as e:
                self.monitor.take_out(f"at start: self-test raised {type(e).__name__}: {e}")
                return
            self.monitor.last_self_test = result
            if result.passed is False:
                self.monitor.take_out(f"at start: self-test failed: {result.detail}")

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            await self.health_step()

    async def health_step(self) -> None:
        """One probe of a board in service, or one reset + self-test of a board out of it."""
        try:
            await self.monitor.step()
        except Exception as e:  # the loop must outlive any one backend's surprise
            self.monitor.probe_detail = f"health step raised {type(e).__name__}: {e}"

    def _edge_changed(self, state: EdgeState) -> None:
        up = state.state == IN
        self.metrics.edge_in_service.set(1 if up else 0)
        self.metrics.child(self.metrics.edge_transitions, "in" if up else "out").inc()
        if up and self.auditor is not None:
            self.auditor.start_window()  # whatever a self-test misses shows first here

    def _audit_mismatch(self, detail: str) -> None:
        # Called on the audit thread: the monitor belongs to the event loop.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.monitor.take_out, detail)

    def _audit_count(self, outcome: str, n: int) -> None:
        self.metrics.child(self.metrics.audit, outcome).inc(n)

    def _fault_changed(self, what: str, f) -> None:
        self.metrics.child(self.metrics.fault_injected, f.fault.kind.value).set(1 if what == "inject" else 0)

    @property
    def edge_healthy(self) -> bool:
        return self.monitor.in_service and not self.batcher.stalled

    @property
    def cloud_available(self) -> bool:
        return self.cloud is not None and self.cloud.available

    def ready(self) -> bool:
        """Ready when some path can answer: the board in service, or a cloud whose breaker is not open."""
        return self.edge_healthy or self.cloud_available

    def readiness(self) -> dict:
        """Which paths can answer now, and why the edge cannot when it cannot."""
        edge = self.edge_healthy
        out = {"paths": {"edge": edge, "cloud": self.cloud_available}}
        if not edge:
            out["edge_detail"] = (self.monitor.detail if not self.monitor.in_service
                                  else self.batcher.last_error or "a batch has not returned (board hung?)")
        if self.cloud is None:
            out["cloud_detail"] = "no cloud configured"
        elif not self.cloud.available:
            out["cloud_detail"] = "circuit breaker open after repeated cloud failures"
        return out

    def _on_batch(self, n: int, queue_s: float, compute_s: float) -> None:
        self.statistics.executed(n, compute_s)
        self._batch_size.observe(n)
        self._compute_latency.observe(compute_s)

    # ---- one request ---------------------------------------------------------------------------------------
    async def infer(self, x: np.ndarray, request: InferRequest, timeout_s: float) -> tuple[np.ndarray, dict]:
        deadline = time.perf_counter() + timeout_s
        x_pre = self.manifest.preprocessing.apply(x)
        self._queue_depth.set(self.batcher.depth)
        plan = self.router.plan(x_pre, self.edge_healthy, self.batcher.estimated_wait_s(), self.cloud is not None)
        outcome = await execute(plan, self, x, x_pre, deadline, self.output.shape, priority_of(request.parameters))
        return outcome.y, self._account(outcome)

    def _account(self, outcome: Outcome) -> dict:
        """Count the request and say in the response's parameters which path answered and why."""
        if outcome.reason is not None and not outcome.degraded:  # one path, one reason: told without the arrays
            path, reason, n = outcome.path, outcome.reason, outcome.y.shape[0]
            counts = self._uniform_counts.get((path, reason))
            if counts is None:
                m = self.metrics
                counts = self._uniform_counts[(path, reason)] = (
                    m.child(m.samples, self.name, path, reason).inc, m.child(m.inferences, self.name, path, reason).inc,
                    m.child(m.rows, self.name, path).inc)
            samples, inferences, rows = counts
            samples(n)
            inferences()
            rows(n)
            edge = n if path == "edge" else 0
            return {"served_by": path, "route_reason": reason, "edge_samples": edge, "cloud_samples": n - edge}
        served, reasons = outcome.served, outcome.reasons
        n_edge = int((served == "edge").sum())
        n_cloud = served.size - n_edge
        path = "edge" if n_cloud == 0 else "cloud" if n_edge == 0 else "edge+cloud"
        first = reasons[0]
        if path != "edge+cloud" and all(r == first for r in reasons):  # the common case, without np.unique
            uniq, main = [first], first
            self.metrics.child(self.metrics.samples, self.name, path, first).inc(served.size)
        else:
            pairs, counts = np.unique(np.stack([served.astype(str), reasons.astype(str)]), axis=1,
                                      return_counts=True)
            for (p, r), k in zip(pairs.T, counts):
                self.metrics.child(self.metrics.samples, self.name, str(p), str(r)).inc(int(k))
            uniq = np.unique(reasons.astype(str))
            # The label names why samples left the edge (else why they stayed); the response lists every reason.
            offloaded = reasons[served == "cloud"] if n_cloud else reasons
            labels, counts = np.unique(offloaded.astype(str), return_counts=True)
            main = str(labels[np.argmax(counts)])
        self.metrics.child(self.metrics.inferences, self.name, path, main).inc()
        if n_edge:
            self.metrics.child(self.metrics.rows, self.name, "edge").inc(n_edge)
        if n_cloud:
            self.metrics.child(self.metrics.rows, self.name, "cloud").inc(n_cloud)
        params = {
            "served_by": path,
            "route_reason": ",".join(str(u) for u in uniq),
            "edge_samples": n_edge,
            "cloud_samples": n_cloud,
        }
        if outcome.degraded:
            params["degraded"] = True
            params["degraded_because"] = str(outcome.cloud_err)[:200]
        return params

    # ---- the paths, as the plan executor uses them ---------------------------------------------------------
    def edge_down_detail(self) -> str:
        return self.monitor.detail or self.batcher.last_error or "not answering"

    def escalate(self, x_pre: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, str]:
        return self.router.escalate(x_pre, y)

    def audit(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.auditor is not None:
            self.auditor.offer(x, y)

    def edge_failed(self, e: ServingError) -> None:
        self.monitor.take_out(f"batch failed: {e}")

    def queue_full(self) -> None:
        self.metrics.child(self.metrics.rejected, "queue_full").inc()

    async def run_edge(self, x: np.ndarray, deadline: float, priority: int = DEFAULT_PRIORITY) -> np.ndarray:
        res = self.batcher.try_direct(x)
        if res is not None:
            self._queue_latency.observe(0.0)
            self.statistics.batched(0.0, res.compute_s)
            return res.y
        fut = self.batcher.submit(x, priority)
        # The request's deadline as a timer that cancels its place in the queue (the batcher skips it), not
        # wait_for's extra future and callbacks on every queued request.
        expired = []
        timer = asyncio.get_running_loop().call_later(max(deadline - time.perf_counter(), 1e-4), _expire, fut,
                                                      expired)
        try:
            res = await fut
        except asyncio.CancelledError:
            if expired:
                # Only the batcher judges the edge (a batch past compute_timeout_s is a hang); running out of the
                # request's own time, which the caller may set as short as it likes, says nothing about it.
                raise DeadlineExceeded("no answer within the request's timeout (the edge was still working on "
                                       "it)") from None
            fut.cancel()  # the caller went away: the batcher skips it
            raise
        finally:
            timer.cancel()
        self._queue_latency.observe(res.queue_s)
        self.statistics.batched(res.queue_s, res.compute_s)
        return res.y

    async def run_cloud(self, x: np.ndarray, deadline: float) -> np.ndarray:
        if self.cloud is None:
            raise Unavailable("no cloud configured (start the gateway with --cloud URL)")
        return await self.cloud.predict(x, timeout_s=max(deadline - time.perf_counter(), 1e-3))


def _expire(fut: asyncio.Future, expired: list) -> None:
    if not fut.done():
        expired.append(True)
        fut.cancel()


def create_gateway(manifest: Manifest, backend: Backend, config: GatewayConfig | None = None):
    """-> (Starlette app, EdgeService). The app starts and stops the service with its lifespan."""
    config = config or GatewayConfig()
    service = EdgeService(manifest, backend, config)
    return create_app(service, config.server), service
