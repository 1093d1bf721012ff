"""An edge node serving a model repository: every model's versions, the repository extension's load/unload/index,
over-the-air pushes, and a watch of the repository folder."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator

from lepton_host.model_repository import (RepositoryError, Trust, add_version, check_model_name, check_package,
                                          read_model, scan_repository)
from lepton_host.package_transfer import DEFAULT_MAX_BYTES, Staging, receive, unpack

from .errors import NotFound
from .lifecycle_metrics import LifecycleMetrics
from .metrics import ServingMetrics
from .versions import CanaryPolicy, LoadRefused, OpenVersion, VersionedModel

if TYPE_CHECKING:
    from .gateway import GatewayConfig

log = logging.getLogger("lepton_hls.edge.node")


@dataclasses.dataclass(frozen=True)
class NodeOptions:
    target: str = "emulated-board"
    watch_s: float | None = 2.0  # how often the repository folder is rescanned; None: never
    max_upload_bytes: int = DEFAULT_MAX_BYTES
    canary_soak_s: float = 60.0
    canary_min_requests: int = 50
    canary_max_error_rate: float = 0.01
    canary_max_audit_mismatches: int = 0
    drain_timeout_s: float = 30.0


class EdgeNode:
    def __init__(self, repo, trust: Trust, open_version: OpenVersion, options: NodeOptions | None = None,
                 metrics: ServingMetrics | None = None):
        self.repo = Path(repo)
        self.trust = trust
        self.open_version = open_version
        self.options = options or NodeOptions()
        self.metrics = metrics or ServingMetrics("lepton_gateway")
        self.lifecycle = LifecycleMetrics(self.metrics.registry)
        self.models: dict[str, VersionedModel] = {}
        self._push_lock = asyncio.Lock()
        self._watch_task: asyncio.Task | None = None
        self._seen: dict[str, tuple] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop it serves on, for callers on other threads

    def _model(self, name: str) -> VersionedModel:
        return VersionedModel(self.repo / name, self.trust, self.open_version, self.options.target, self.metrics,
                              self.lifecycle, self.options.drain_timeout_s)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        log.info("model repository %s; %s", self.repo, self.trust.describe())
        for name in scan_repository(self.repo):
            model = self._model(name)
            try:
                await model.start()
            except RepositoryError as e:
                log.error("%s", e)  # the other models still serve; this one answers 404 until a version loads
                continue
            self.models[name] = model
            self._seen[name] = self._fingerprint(name)
        if not self.models:
            raise RepositoryError(f"no model of {self.repo} could be loaded; see the log for each version's reason")
        if self.options.watch_s:
            self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        for model in self.models.values():
            await model.stop()

    def model(self, name: str) -> VersionedModel:
        m = self.models.get(name)
        if m is None:
            raise NotFound(f"unknown model {name!r}; this node serves {', '.join(sorted(self.models)) or 'none'}")
        return m

    # ---- the repository extension ------------------------------------------------------------------------
    def index(self) -> list[dict]:
        """Triton's repository index: every version on disk, with its state and why it is not ready."""
        out = []
        for name in sorted(p.name for p in self.repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
            m = self.models.get(name)
            for v in read_model(self.repo / name).versions:
                row = {"name": name, "version": str(v), "state": "UNAVAILABLE", "reason": ""}
                if m is not None and m.serving is not None and m.serving.version == v:
                    row["state"] = "READY"
                elif m is not None and m.canary is not None and m.canary.version == v:
                    row["state"], row["reason"] = "READY", "canary"
                elif m is not None and v in m.standby:
                    row["state"], row["reason"] = "READY", "standby on the emulator"
                elif m is not None and v in m.refused:
                    row["reason"] = m.refused[v]
                out.append(row)
        return out

    async def load(self, name: str, version: int | None = None, canary: float | None = None) -> dict:
        if not (self.repo / check_model_name(name)).is_dir():
            raise NotFound(f"the repository has no model {name!r}")
        model = self.models.get(name)
        if model is None:  # a model folder that appeared since start
            model = self._model(name)
            await model.start()
            self.models[name] = model
            result = {"version": model.serving.version, "state": "serving", "detail": f"on {model.target}"}
        else:
            result = await model.load(version, self._canary(canary))
        self._seen[name] = self._fingerprint(name)
        return {"model": name, **result}

    async def unload(self, name: str, version: int | None = None) -> dict:
        model = self.model(name)
        if version is None:
            await model.stop()
            del self.models[name]
            return {"model": name, "state": "unloaded"}
        return {"model": name, **await model.unload(version)}

    async def push(self, name: str, chunks: AsyncIterator[bytes], content_length: int | None,
                   canary: float | None = None) -> dict:
        """Store an uploaded package as `name`'s next version and load it (or start it as a canary)."""
        policy = self._canary(canary)
        check_model_name(name)  # before it names a folder
        async with self._push_lock:
            staging = Staging.create(self.repo / name)
            try:
                await receive(chunks, staging, self.options.max_upload_bytes, content_length)
                pkg = await asyncio.to_thread(unpack, staging)
                # A package this node would refuse is not stored at all: the repository holds only candidates.
                await asyncio.to_thread(check_package, pkg, self.trust, f"upload for {name}")
                version = add_version(self.repo / name, pkg)
            finally:
                staging.discard()
            log.info("%s version %d received", name, version)
            self._seen[name] = self._fingerprint(name)
            if name not in self.models:
                return await self.load(name)
            return {"model": name, **await self.models[name].load(version, policy)}

    def _canary(self, percent: float | None) -> CanaryPolicy | None:
        if percent is None:
            return None
        if not 0 < percent < 100:
            raise LoadRefused(f"canary share {percent:g}% must be between 0 and 100 (exclusive)")
        o = self.options
        return CanaryPolicy(percent / 100, o.canary_soak_s, o.canary_min_requests, o.canary_max_error_rate,
                            o.canary_max_audit_mismatches)

    # ---- watching the folder -----------------------------------------------------------------------------
    def _fingerprint(self, name: str) -> tuple:
        try:
            entry = read_model(self.repo / name)
        except RepositoryError as e:
            return ("error", str(e))
        return entry.versions, entry.policy

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.options.watch_s)
            await self.rescan()

    async def rescan(self) -> dict[str, dict | str]:
        """A version copied into the repository, or a changed version policy, is loaded as if asked for;
        -> what happened, by model (only models whose folder changed)."""
        changes: dict[str, dict | str] = {}
        for p in sorted(self.repo.iterdir()):
            if not p.is_dir() or p.name.startswith("."):
                continue
            fp = self._fingerprint(p.name)
            if fp == self._seen.get(p.name):
                continue
            self._seen[p.name] = fp
            if fp[0] == "error":
                log.error("%s", fp[1])
                changes[p.name] = fp[1]
                continue
            try:
                changes[p.name] = await self.load(p.name)
                log.info("repository change: %s", changes[p.name])
            except RepositoryError as e:
                changes[p.name] = str(e)
                log.warning("repository change in %s not loaded: %s", p.name, e)
        return changes

    def describe(self) -> dict:
        return {"repository": str(self.repo), "trust": self.trust.describe(),
                "models": {n: m.describe() for n, m in sorted(self.models.items())}}


def version_opener(base: "GatewayConfig", engine: str, metrics: ServingMetrics, routing_overrides: dict | None = None):
    """-> open_version(admitted, target, audit_all): an EdgeService for one version of a repository model, with the
    node's settings and the version's own routing policy (its serving.json), sharing the node's metrics."""
    from .audit import AuditConfig
    from .edge import open_edge_backend
    from .gateway import EdgeService
    from .routing import RoutingPolicy

    def open_version(admitted, target: str, audit_all: bool):
        backend = open_edge_backend(admitted.path, target, engine)
        try:
            policy = RoutingPolicy.for_package(admitted.manifest, admitted.path, **(routing_overrides or {}))
            if target == "emulator":
                audit = None  # the audit's reference is this same emulation
            elif audit_all:
                audit = AuditConfig(fraction=1.0, window_s=0.0, window_answers=0, queue_size=4096)
            else:
                audit = base.audit
            config = dataclasses.replace(base, policy=policy, package_dir=str(admitted.path), audit=audit,
                                         fault_schedule=None)
            return EdgeService(admitted.manifest, backend, config, metrics=metrics)
        except BaseException:
            backend.close()
            raise

    return open_version
