"""The edge gateway: requests arrive here, are preprocessed and checked, answered on the accelerator through
the dynamic batcher when the routing policy allows, and otherwise (or in addition, for the cascade) by the
cloud. The caller sees one protocol and one answer; the response's parameters say which path answered and why.

Failure handling: a failed or hung edge batch falls back to the cloud; a failed cloud call falls back to the
edge's own answer (marked degraded) when there is one; when neither path can answer the caller gets one 503
naming both causes. Imports no TensorFlow.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from lepton_host.backend import Backend
from lepton_host.manifest import Manifest

from . import routing as R
from .app import ServerOptions, TensorInfo, create_app
from .batcher import BatcherConfig, DynamicBatcher
from .cloud_client import CloudClient, CloudConfig
from .errors import DeadlineExceeded, EdgeUnavailable, Overloaded, ServingError, Unavailable
from .metrics import ServingMetrics
from .oip import InferRequest


@dataclass
class GatewayConfig:
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    policy: R.RoutingPolicy = field(default_factory=R.RoutingPolicy)
    cloud: CloudConfig | None = None
    request_timeout_s: float = 5.0
    health_interval_s: float = 0.5  # how often the board's health() is asked (it may touch registers)
    # After an edge call fails, send work to the cloud for this long before trying the board again, so a hung
    # board costs one timeout, not one per batch.
    edge_retry_s: float = 1.0
    server: ServerOptions = field(default_factory=ServerOptions)


class EdgeService:
    platform = "lepton-hls_edge"
    version = "1"

    def __init__(self, manifest: Manifest, backend: Backend, config: GatewayConfig):
        self.manifest = manifest
        self.backend = backend
        self.config = config
        self.name = manifest.model.name
        self.input = TensorInfo(manifest.input.name, tuple(manifest.input.shape))
        self.output = TensorInfo(manifest.output.name, tuple(manifest.output.shape))
        self.max_batch_size = config.batcher.max_batch_size
        self.max_queue_delay_s = config.batcher.max_queue_delay_s
        self.request_timeout_s = config.request_timeout_s
        self.metrics = ServingMetrics("lepton_gateway")
        self.router = R.Router(config.policy, manifest)
        self.batcher = DynamicBatcher(backend.predict, config.batcher, name="edge", on_batch=self._on_batch)
        self.cloud: CloudClient | None = None
        if config.cloud is not None:
            self.cloud = CloudClient(config.cloud, self.name, self.input.name, self.output.name, self.metrics)
        self._edge_ok = True
        self._edge_detail = ""
        self._health_task: asyncio.Task | None = None
        self._edge_down_until = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._warm_up()
        self.batcher.start()
        await self._check_health()
        self._health_task = asyncio.get_running_loop().create_task(self._health_loop())

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        await self.batcher.stop()
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

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            await self._check_health()

    async def _check_health(self) -> None:
        # health() may block on a hung board: ask in a thread, and treat no answer as unhealthy.
        try:
            h = await asyncio.wait_for(asyncio.to_thread(self.backend.health), self.config.health_interval_s)
            self._edge_ok, self._edge_detail = bool(h.ok), h.detail
        except asyncio.TimeoutError:
            self._edge_ok, self._edge_detail = False, "health check did not answer"
        except Exception as e:
            self._edge_ok, self._edge_detail = False, f"health check failed: {e}"

    @property
    def edge_healthy(self) -> bool:
        return self._edge_ok and not self.batcher.stalled and time.perf_counter() >= self._edge_down_until

    def ready(self) -> bool:
        """Ready when some path can answer: the board, or a cloud whose breaker is not open."""
        return self.edge_healthy or (self.cloud is not None and self.cloud.available)

    def _on_batch(self, n: int, queue_s: float, compute_s: float) -> None:
        self.metrics.child(self.metrics.batch_size, self.name).observe(n)
        self.metrics.child(self.metrics.compute_latency, self.name).observe(compute_s)

    # ---- one request -------------------------------------------------------------------------------------
    async def infer(self, x: np.ndarray, request: InferRequest, timeout_s: float) -> tuple[np.ndarray, dict]:
        deadline = time.perf_counter() + timeout_s
        n = x.shape[0]
        x_pre = self.manifest.preprocessing.apply(x)
        self.metrics.child(self.metrics.queue_depth, self.name).set(self.batcher.depth)
        decision = self.router.before_edge(
            x_pre, self.edge_healthy, self.batcher.estimated_wait_s(), self.cloud is not None
        )
        reasons = decision.reasons
        y = np.empty((n, *self.output.shape), dtype=np.float64)
        served = np.zeros(n, dtype="U5")  # "edge" | "cloud"
        degraded = False
        edge_idx = np.flatnonzero(decision.edge)
        cloud_idx = np.flatnonzero(~decision.edge)
        edge_err: ServingError | None = None
        cloud_err: ServingError | None = None

        cloud_task = None
        if cloud_idx.size:  # runs while the edge works on the rest
            cloud_task = asyncio.ensure_future(self._cloud(x[cloud_idx], deadline))

        if edge_idx.size:
            try:
                ye = await self._edge(x if edge_idx.size == n else x[edge_idx], deadline)
                y[edge_idx] = ye
                served[edge_idx] = "edge"
                esc, why = self.router.escalate(x_pre[edge_idx], ye)
                if esc.any() and self.cloud is not None:
                    esc_idx = edge_idx[esc]
                    reasons[esc_idx] = why
                    try:
                        y[esc_idx] = await self._cloud(x[esc_idx], deadline)
                        served[esc_idx] = "cloud"
                    except ServingError as e:
                        degraded = True  # the edge's unsure answer stands
                        cloud_err = e
                        reasons[esc_idx] = f"{why}+{R.CLOUD_DOWN}"
            except Overloaded:
                if cloud_task is not None:
                    cloud_task.cancel()
                self.metrics.child(self.metrics.rejected, "queue_full").inc()
                raise
            except DeadlineExceeded:
                # The caller's own deadline ran out while the edge was working on it: nothing is wrong with the
                # edge (other requests keep using it), and the cloud would have no time left either.
                if cloud_task is not None:
                    cloud_task.cancel()
                raise
            except (EdgeUnavailable, ServingError) as e:
                edge_err = e
                self._edge_down_until = time.perf_counter() + self.config.edge_retry_s
                reasons[edge_idx] = R.EDGE_FAILED
                if self.cloud is None:
                    if cloud_task is not None:
                        cloud_task.cancel()
                    raise Unavailable(f"edge failed and no cloud is configured: {e}") from None
                try:
                    y[edge_idx] = await self._cloud(x[edge_idx], deadline)
                    served[edge_idx] = "cloud"
                except ServingError as ce:
                    if cloud_task is not None:
                        cloud_task.cancel()
                    raise Unavailable(f"no path could answer: edge: {e}; cloud: {ce}") from None

        if cloud_task is not None:
            try:
                y[cloud_idx] = await cloud_task
                served[cloud_idx] = "cloud"
            except ServingError as e:
                cloud_err = e
                policy = self.config.policy
                can_degrade = policy.degrade_to_edge and self.edge_healthy and policy.mode != "cloud"
                if not can_degrade:
                    if isinstance(e, DeadlineExceeded):
                        raise e from None  # the caller's time ran out: a 504, not "no path could answer"
                    edge_note = f"edge: {edge_err}" if edge_err else (
                        f"edge: unhealthy ({self._edge_detail or self.batcher.last_error or 'not answering'})"
                        if not self.edge_healthy else "edge: not allowed by the routing policy"
                    )
                    raise Unavailable(f"no path could answer: {edge_note}; cloud: {e}") from None
                try:
                    y[cloud_idx] = await self._edge(x[cloud_idx], deadline)
                except DeadlineExceeded:
                    raise
                except ServingError as ee:
                    raise Unavailable(f"no path could answer: edge: {ee}; cloud: {e}") from None
                served[cloud_idx] = "edge"
                degraded = True
                reasons[cloud_idx] = np.array([f"{r}+{R.CLOUD_DOWN}" for r in reasons[cloud_idx]], dtype=object)

        return y, self._account(served, reasons, degraded, cloud_err)

    def _account(self, served: np.ndarray, reasons: np.ndarray, degraded: bool, cloud_err) -> dict:
        n_edge = int((served == "edge").sum())
        n_cloud = served.size - n_edge
        path = "edge" if n_cloud == 0 else "cloud" if n_edge == 0 else "edge+cloud"
        first = reasons[0]
        if all(r == first for r in reasons):  # the common case, without np.unique's cost
            uniq, main = [first], first
        else:
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
        if degraded:
            params["degraded"] = True
            params["degraded_because"] = str(cloud_err)[:200]
        return params

    async def _edge(self, x: np.ndarray, deadline: float) -> np.ndarray:
        res = self.batcher.try_direct(x)
        if res is not None:
            self.metrics.child(self.metrics.queue_latency, self.name).observe(0.0)
            return res.y
        fut = self.batcher.submit(x)
        remaining = deadline - time.perf_counter()
        try:
            res = await asyncio.wait_for(fut, max(remaining, 1e-4))
        except asyncio.TimeoutError:
            # Only the batcher judges the edge (a batch past compute_timeout_s is a hang); running out of the
            # request's own time, which the caller may set as short as it likes, says nothing about it.
            raise DeadlineExceeded("no answer within the request's timeout (the edge was still working on it)") \
                from None
        except asyncio.CancelledError:
            fut.cancel()  # the caller went away: the batcher skips it
            raise
        self.metrics.child(self.metrics.queue_latency, self.name).observe(res.queue_s)
        return res.y

    async def _cloud(self, x: np.ndarray, deadline: float) -> np.ndarray:
        if self.cloud is None:
            raise Unavailable("no cloud configured (start the gateway with --cloud URL)")
        return await self.cloud.predict(x, timeout_s=max(deadline - time.perf_counter(), 1e-3))


def create_gateway(manifest: Manifest, backend: Backend, config: GatewayConfig | None = None):
    """-> (Starlette app, EdgeService). The app starts and stops the service with its lifespan."""
    config = config or GatewayConfig()
    service = EdgeService(manifest, backend, config)
    return create_app(service, config.server), service
