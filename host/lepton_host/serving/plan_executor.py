"""Carries out one request's `routing.RoutePlan`.

The cloud's samples go first and run while the edge answers its own; the edge's answers are audited, and those
the plan's cascade finds unsure go to the cloud. A failed edge batch goes to the cloud, a cloud that cannot
answer leaves its samples to the edge (marked degraded), as far as the plan allows; when no path can answer,
one ServingError names the cause on both. The paths themselves (batcher, cloud client, health monitor) belong
to the gateway, which passes itself in as `Paths`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import numpy as np

from .errors import DeadlineExceeded, Overloaded, ServingError, Unavailable
from .routing import CLOUD_DOWN, EDGE_FAILED, RoutePlan
from .schedule_policy import DEFAULT_PRIORITY


class Paths(Protocol):
    """What the executor needs of the gateway."""

    @property
    def edge_healthy(self) -> bool: ...

    def edge_down_detail(self) -> str: ...

    async def run_edge(self, x: np.ndarray, deadline: float, priority: int = DEFAULT_PRIORITY) -> np.ndarray: ...

    async def run_cloud(self, x: np.ndarray, deadline: float) -> np.ndarray: ...

    def escalate(self, x_pre: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, str]: ...

    def audit(self, x: np.ndarray, y: np.ndarray) -> None: ...

    def edge_failed(self, e: ServingError) -> None: ...

    def queue_full(self) -> None: ...


class Outcome:
    """What answered each sample and why. `path` and `reason`: the one path that answered every sample and the
    one reason for all of them, when that is so (the common case, told without looking at every sample)."""

    __slots__ = ("y", "degraded", "cloud_err", "path", "reason", "_served", "_reasons", "_plan_reasons")

    def __init__(self, y: np.ndarray, served: np.ndarray | None, reasons: np.ndarray | None, degraded: bool,
                 cloud_err: ServingError | None, path: str | None = None, reason: str | None = None,
                 plan_reasons: np.ndarray | None = None):
        self.y = y
        self.degraded = degraded  # some answer is the edge's although the plan wanted the cloud's
        self.cloud_err = cloud_err  # why the cloud did not answer, when it did not
        self.path, self.reason = path, reason
        self._served, self._reasons, self._plan_reasons = served, reasons, plan_reasons

    @property
    def served(self) -> np.ndarray:
        """Per sample: "edge" | "cloud", the path whose answer is in y."""
        if self._served is None:
            self._served = np.full(self.y.shape[0], self.path, dtype="U5")
        return self._served

    @property
    def reasons(self) -> np.ndarray:
        """Per sample: the plan's reason, or what happened to it since."""
        if self._reasons is None:
            self._reasons = self._plan_reasons.copy()  # the plan stays as it was
        return self._reasons


async def execute(plan: RoutePlan, paths: Paths, x: np.ndarray, x_pre: np.ndarray, deadline: float,
                  output_shape: tuple[int, ...], priority: int = DEFAULT_PRIORITY) -> Outcome:
    """Answer raw features `x` (preprocessed: `x_pre`) as `plan` says, by `deadline` (perf_counter time);
    `priority` orders its edge work in the batching queue."""
    if not plan.cascade and (plan.whole[0] if plan.whole is not None else plan.edge.all()):
        # Every sample to the edge and nothing after it: one call, its answer as it comes.
        try:
            y = await paths.run_edge(x, deadline, priority)
        except ServingError as e:
            run = _Run(plan, paths, x, x_pre, deadline, output_shape, priority)
            await run.edge_failed(np.arange(x.shape[0]), e)
            return run.outcome()
        paths.audit(x, y)
        if y.dtype != np.float64 or y.shape[1:] != output_shape:
            y = _as_output(y, output_shape)
        return Outcome(y, None, None, False, None, "edge", None if plan.whole is None else plan.whole[1],
                       plan.reasons)
    run = _Run(plan, paths, x, x_pre, deadline, output_shape, priority)
    await run.all_steps()
    return run.outcome()


def _as_output(y: np.ndarray, output_shape: tuple[int, ...]) -> np.ndarray:
    """An answer as float64 of the model's output shape (raises as an assignment does when it cannot be)."""
    out = np.empty((y.shape[0], *output_shape), dtype=np.float64)
    out[:] = y
    return out


class _Run:
    def __init__(self, plan: RoutePlan, paths: Paths, x: np.ndarray, x_pre: np.ndarray, deadline: float,
                 output_shape: tuple[int, ...], priority: int = DEFAULT_PRIORITY):
        self.plan, self.paths, self.x, self.x_pre, self.deadline = plan, paths, x, x_pre, deadline
        self.priority = priority
        n = x.shape[0]
        self.y = np.empty((n, *output_shape), dtype=np.float64)
        self.served = np.zeros(n, dtype="U5")
        self.reasons = plan.reasons.copy()
        self.degraded = False
        self.cloud_err: ServingError | None = None
        self.edge_err: ServingError | None = None

    def outcome(self) -> Outcome:
        return Outcome(self.y, self.served, self.reasons, self.degraded, self.cloud_err)

    async def all_steps(self) -> None:
        edge_idx = np.flatnonzero(self.plan.edge)
        cloud_idx = np.flatnonzero(~self.plan.edge)
        cloud_first = None
        if cloud_idx.size:
            cloud_first = asyncio.ensure_future(self.paths.run_cloud(self.x[cloud_idx], self.deadline))
        if edge_idx.size:
            try:
                await self._edge_step(edge_idx)
            except ServingError:
                if cloud_first is not None:
                    cloud_first.cancel()
                raise
        if cloud_first is not None:
            await self._cloud_step(cloud_idx, cloud_first)

    # ---- the edge's samples --------------------------------------------------------------------------------
    async def _edge_step(self, idx: np.ndarray) -> None:
        try:
            await self._edge_then_cascade(idx)
        except ServingError as e:
            await self.edge_failed(idx, e)

    async def edge_failed(self, idx: np.ndarray, e: ServingError) -> None:
        """The edge's samples `idx` after their edge call raised `e`."""
        if isinstance(e, Overloaded):
            self.paths.queue_full()
            raise e
        if isinstance(e, DeadlineExceeded):
            # The caller's own deadline ran out while the edge was working on it: nothing is wrong with the
            # edge (other requests keep using it), and the cloud would have no time left either.
            raise e
        await self._after_edge_failure(idx, e)

    async def _edge_then_cascade(self, idx: np.ndarray) -> None:
        x = self.x if idx.size == self.x.shape[0] else self.x[idx]
        ye = await self.paths.run_edge(x, self.deadline, self.priority)
        self.paths.audit(x, ye)
        self.y[idx] = ye
        self.served[idx] = "edge"
        if self.plan.cascade:
            await self._cascade(idx, ye)

    async def _cascade(self, idx: np.ndarray, ye: np.ndarray) -> None:
        unsure, why = self.paths.escalate(self.x_pre[idx], ye)
        if not unsure.any():
            return
        esc_idx = idx[unsure]
        self.reasons[esc_idx] = why
        try:
            self.y[esc_idx] = await self.paths.run_cloud(self.x[esc_idx], self.deadline)
            self.served[esc_idx] = "cloud"
        except ServingError as e:
            self.degraded = True  # the edge's unsure answer stands
            self.cloud_err = e
            self.reasons[esc_idx] = f"{why}+{CLOUD_DOWN}"

    async def _after_edge_failure(self, idx: np.ndarray, e: ServingError) -> None:
        self.edge_err = e
        self.paths.edge_failed(e)
        self.reasons[idx] = EDGE_FAILED
        if not self.plan.cloud_if_edge_fails:
            raise Unavailable(f"edge failed and no cloud is configured: {e}") from None
        try:
            self.y[idx] = await self.paths.run_cloud(self.x[idx], self.deadline)
        except ServingError as ce:
            raise Unavailable(f"no path could answer: edge: {e}; cloud: {ce}") from None
        self.served[idx] = "cloud"

    # ---- the cloud's samples -------------------------------------------------------------------------------
    async def _cloud_step(self, idx: np.ndarray, cloud_first: asyncio.Future) -> None:
        try:
            self.y[idx] = await cloud_first
        except ServingError as e:
            self.cloud_err = e
            await self._after_cloud_failure(idx, e)
            return
        self.served[idx] = "cloud"

    async def _after_cloud_failure(self, idx: np.ndarray, e: ServingError) -> None:
        if not (self.plan.edge_if_cloud_fails and self.paths.edge_healthy):
            if isinstance(e, DeadlineExceeded):
                raise e from None  # the caller's time ran out: a 504, not "no path could answer"
            raise Unavailable(f"no path could answer: {self._edge_note()}; cloud: {e}") from None
        x = self.x[idx]
        try:
            self.y[idx] = await self.paths.run_edge(x, self.deadline, self.priority)
        except DeadlineExceeded:
            raise
        except ServingError as ee:
            if not isinstance(ee, Overloaded):
                self.paths.edge_failed(ee)
            raise Unavailable(f"no path could answer: edge: {ee}; cloud: {e}") from None
        self.paths.audit(x, self.y[idx])
        self.served[idx] = "edge"
        self.degraded = True
        self.reasons[idx] = np.array([f"{r}+{CLOUD_DOWN}" for r in self.reasons[idx]], dtype=object)

    def _edge_note(self) -> str:
        if self.edge_err is not None:
            return f"edge: {self.edge_err}"
        if not self.paths.edge_healthy:
            return f"edge: out of service ({self.paths.edge_down_detail()})"
        return "edge: not allowed by the routing policy"
