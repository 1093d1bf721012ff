"""One model of the edge node's repository, served across versions: load, check, switch, canary, roll back.

One version at a time owns the accelerator. A switch never leaves a request without an answer and never mixes
versions in one answer:

1. the new version is admitted (signature, hashes, same input/output contract) and self-tested bit for bit on
   the bit-exact emulator; any failure stops here and the serving version never noticed;
2. where there is an accelerator, the serving version's own bit-exact emulation takes new requests while its
   in-flight ones finish on the board (same answers, bit for bit); the board is handed to the new version, which
   must pass its golden-vector self-test there. If it fails, the old version is loaded back onto the board;
3. new requests go to the new version in one assignment; requests in flight finish where they started.

A canary holds the accelerator for its share of traffic, with every answer audited against its own bit-exact
emulation, while the stable version answers the rest on its emulation. The node rolls the canary back by itself
when its error rate or audit mismatches pass the thresholds, and promotes it after the soak period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lepton_host.model_repository import (AdmittedVersion, ModelEntry, RepositoryError, Trust, admit, read_model,
                                          same_contract)
from lepton_host.selftest import SelfTestResult

from .errors import NotFound, ServingError

log = logging.getLogger("lepton_hls.edge.versions")

EMULATOR = "emulator"


class LoadRefused(RepositoryError):
    """A version could not be loaded; the serving version is unchanged."""


@dataclass(frozen=True)
class CanaryPolicy:
    share: float  # of unversioned requests, 0 < share < 1
    soak_s: float = 60.0  # promote after this long without passing a threshold ...
    min_requests: int = 50  # ... and at least this many canary requests
    max_error_rate: float = 0.01  # failed canary requests / canary requests
    max_audit_mismatches: int = 0  # canary answers that differ from its bit-exact emulation

    def verdict(self, requests: int, errors: int, mismatches: int, elapsed_s: float) -> str:
        """'rollback', 'promote' or 'continue'. Pure: the controller feeds it counts and the time."""
        if mismatches > self.max_audit_mismatches:
            return "rollback"
        if requests and errors / requests > self.max_error_rate and errors >= 2:
            return "rollback"
        if elapsed_s >= self.soak_s and requests >= self.min_requests:
            return "promote"
        return "continue"


@dataclass
class Slot:
    """One loaded version on one path (the accelerator, or the emulator)."""

    admitted: AdmittedVersion
    service: object  # gateway.EdgeService
    target: str
    self_test: SelfTestResult | None = None
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    loaded_at: float = field(default_factory=time.monotonic)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def version(self) -> int:
        return self.admitted.version

    def mismatches(self) -> int:
        auditor = getattr(self.service, "auditor", None)
        return auditor.counts().mismatches if auditor is not None else 0

    async def drained(self, timeout_s: float) -> bool:
        if self.in_flight == 0:
            return True
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False


# open_version(admitted, target, audit_all) -> a started-able EdgeService for that version on that path
OpenVersion = Callable[[AdmittedVersion, str, bool], object]


class VersionedModel:
    """The gateway's service interface for one repository model; answers come from the current version."""

    platform = "lepton-hls_edge"

    def __init__(self, model_dir, trust: Trust, open_version: OpenVersion, target: str, metrics,
                 lifecycle=None, drain_timeout_s: float = 30.0):
        self.model_dir = model_dir
        self.trust = trust
        self.open_version = open_version
        self.target = target
        self.metrics = metrics  # the node's ServingMetrics, shared by every version's service
        self.lifecycle = lifecycle  # LifecycleMetrics in the same registry, or None
        self.drain_timeout_s = drain_timeout_s
        self.entry: ModelEntry = read_model(model_dir)
        self.name = self.entry.name
        self.serving: Slot | None = None
        self.canary: Slot | None = None
        self.canary_policy: CanaryPolicy | None = None
        self._canary_count = 0
        self.standby: dict[int, Slot] = {}  # other versions, on the emulator, loaded when asked for
        self.refused: dict[int, str] = {}
        self.events: list[dict] = []  # what happened, newest last, for `info` and the log
        self._lock = asyncio.Lock()
        self._canary_task: asyncio.Task | None = None

    # ---- what the app reads ------------------------------------------------------------------------------
    def _svc(self):
        if self.serving is None:
            raise ServingError(f"model {self.name!r} has no version loaded")
        return self.serving.service

    @property
    def version(self) -> str:
        return str(self.serving.version) if self.serving else ""

    @property
    def versions(self) -> list[str]:
        return [str(v) for v in self.entry.versions]

    @property
    def version_policy(self) -> dict:
        """As Triton's model configuration states it."""
        p = self.entry.policy
        return {"latest": {"num_versions": 1}} if p.kind == "latest" else {"specific": {"versions": [p.version]}}

    def __getattr__(self, item):
        # input, output, max_batch_size, metrics, request_timeout_s ...: those of the serving version (all versions
        # share one contract, checked at load)
        if item.startswith("_") or item in ("serving", "canary"):
            raise AttributeError(item)
        return getattr(self._svc(), item)

    def ready(self) -> bool:
        return self.serving is not None and self.serving.service.ready()

    def readiness(self) -> dict:
        out = self.serving.service.readiness() if self.serving else {"paths": {}}
        return out | {"version": self.version, "canary": self.canary.version if self.canary else None}

    # ---- requests ----------------------------------------------------------------------------------------
    def _pick(self) -> tuple[Slot, Slot | None]:
        """The slot for an unversioned request, and the one to retry on when it is a canary's."""
        canary, stable = self.canary, self.serving
        if canary is not None and self.canary_policy is not None:
            # Bresenham: exactly `share` of requests, evenly spread, no randomness to make tests flaky
            n = self._canary_count = self._canary_count + 1
            share = self.canary_policy.share
            if int(n * share) > int((n - 1) * share):
                return canary, stable
        if stable is None:
            raise ServingError(f"model {self.name!r} has no version loaded")
        return stable, None

    async def infer(self, x: np.ndarray, request, timeout_s: float):
        slot, fallback = self._pick()
        try:
            return await self._call(slot, x, request, timeout_s)
        except ServingError:
            if fallback is None:
                raise
            # A failing canary costs its callers nothing: the stable version answers instead.
            return await self._call(fallback, x, request, timeout_s)

    async def infer_version(self, version: str, x: np.ndarray, request, timeout_s: float):
        return await self._call(await self.slot_for(version), x, request, timeout_s)

    async def slot_for(self, version: str) -> Slot:
        if not version.isdigit():
            raise NotFound(f"model {self.name!r} has no version {version!r} (versions: {', '.join(self.versions)})")
        v = int(version)
        for slot in (self.serving, self.canary, self.standby.get(v)):
            if slot is not None and slot.version == v:
                return slot
        self.entry = read_model(self.model_dir)
        if v not in self.entry.versions:
            raise NotFound(f"model {self.name!r} has no version {v} (versions: {', '.join(self.versions)})")
        async with self._lock:
            if v not in self.standby:
                self.standby[v] = await self._open(self._admit(v), EMULATOR)
            return self.standby[v]

    async def _call(self, slot: Slot, x, request, timeout_s):
        slot.in_flight += 1
        slot.requests += 1
        try:
            y, params = await slot.service.infer(x, request, timeout_s)
        except ServingError:
            slot.errors += 1
            raise
        finally:
            slot.in_flight -= 1
            if slot.in_flight == 0:
                slot._idle.set()
        if self.lifecycle is not None:
            self.lifecycle.answered(self.name, slot.version, slot.target)
        return y, {**params, "model_version": str(slot.version)}

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Serve the version the policy chooses; when it cannot load, the next one down (said in the log)."""
        self.entry = read_model(self.model_dir)
        candidates = sorted(self.entry.versions, reverse=True)
        if self.entry.policy.kind == "pinned":
            candidates = [v for v in candidates if v == self.entry.policy.version]
        for v in candidates:
            try:
                self.serving = await self._open(self._admit(v), self.target)
                self._event("serving", v, f"on {self.target}")
                return
            except RepositoryError as e:
                self.refused[v] = str(e)
                self._event("refused", v, str(e))
        raise RepositoryError(f"model {self.name!r}: no version could be loaded ("
                              + "; ".join(f"{v}: {why}" for v, why in self.refused.items()) + ")"
                              if self.refused else f"model {self.name!r} has no versions under {self.model_dir}")

    async def stop(self) -> None:
        if self._canary_task is not None:
            self._canary_task.cancel()
        for slot in [self.serving, self.canary, *self.standby.values()]:
            if slot is not None:
                await self._close(slot)

    async def load(self, version: int | None = None, canary: CanaryPolicy | None = None) -> dict:
        """Load `version` and switch to it, or start it as a canary. Without a version: what the policy chooses,
        and under `latest` the next one down when it is refused (never one refused before).
        -> {"version", "state", "detail"}; raises LoadRefused with the reason, the serving version unchanged."""
        async with self._lock:
            self.entry = read_model(self.model_dir)
            if version is not None:
                return await self._load(version, canary)
            candidates = sorted((v for v in self.entry.versions if v not in self.refused), reverse=True)
            if self.entry.policy.kind == "pinned":
                candidates = [v for v in candidates if v == self.entry.policy.version]
            if not candidates:
                raise LoadRefused(f"model {self.name!r}: the version policy {self.entry.policy.to_config()} selects "
                                  "no version present that was not refused")
            refusals = []
            for v in candidates:
                try:
                    return await self._load(v, canary)
                except LoadRefused as e:
                    refusals.append(str(e))
            raise LoadRefused("; ".join(refusals))

    async def _load(self, version: int, canary: CanaryPolicy | None) -> dict:
        if self.serving is not None and version == self.serving.version and canary is None:
            return {"version": version, "state": "serving", "detail": "already serving"}
        try:
            admitted = self._admit(version)
            if self.serving is not None:
                why = same_contract(admitted.manifest, self.serving.admitted.manifest)
                if why:
                    raise LoadRefused(f"{self.name} version {version} refused: {why}; publish it as another model")
            # The cheap, safe check first, off the accelerator: its golden vectors on its own emulation.
            await self._close(await self._open(admitted, EMULATOR))
            if canary is not None:
                return await self._start_canary(admitted, canary)
            await self._switch(admitted)
        except RepositoryError as e:
            self.refused[version] = str(e)
            self._event("refused", version, str(e))
            raise LoadRefused(str(e)) from None
        self.refused.pop(version, None)
        return {"version": version, "state": "serving", "detail": f"on {self.target}"}

    async def unload(self, version: int) -> dict:
        async with self._lock:
            if self.serving is not None and self.serving.version == version:
                raise LoadRefused(f"{self.name} version {version} is serving; load another version first")
            if self.canary is not None and self.canary.version == version:
                await self._end_canary("rollback", "unloaded by request")
                return {"version": version, "state": "unloaded"}
            slot = self.standby.pop(version, None)
            if slot is None:
                raise NotFound(f"{self.name} version {version} is not loaded")
            await self._close(slot)
            self._event("unloaded", version, "")
            return {"version": version, "state": "unloaded"}

    # ---- the switch --------------------------------------------------------------------------------------
    async def _switch(self, admitted: AdmittedVersion) -> None:
        old = self.serving
        if old is None or self.target == EMULATOR:
            new = await self._open(admitted, self.target)
            self.serving = new  # one assignment: the next request goes to the new version
            self._event("serving", new.version, f"on {self.target}" + (f", replacing {old.version}" if old else ""))
            if old is not None:
                await self._retire(old)
            return
        # One accelerator: the old version's bit-exact emulation bridges while the board changes hands.
        bridge = await self._open(old.admitted, EMULATOR)
        self.serving = bridge
        await self._retire(old)
        try:
            new = await self._open(admitted, self.target)
        except RepositoryError as e:
            self.serving = await self._open(old.admitted, self.target)
            await self._retire(bridge)
            why = f"{e}; version {old.version} is back on {self.target}"
            self._event("rolled back", admitted.version, why)
            raise LoadRefused(why) from None
        self.serving = new
        await self._retire(bridge)
        self._event("serving", new.version, f"on {self.target}, replacing {old.version}")

    async def _start_canary(self, admitted: AdmittedVersion, policy: CanaryPolicy) -> dict:
        if self.canary is not None:
            raise LoadRefused(f"{self.name} version {self.canary.version} is already a canary; wait for its verdict")
        stable = self.serving
        if self.target != EMULATOR:
            # The canary takes the accelerator; the stable version answers the rest on its bit-exact emulation.
            bridge = await self._open(stable.admitted, EMULATOR)
            self.serving = bridge
            await self._retire(stable)
        try:
            self.canary = await self._open(admitted, self.target, audit_all=True)
        except RepositoryError:
            if self.target != EMULATOR:
                self.serving = await self._open(stable.admitted, self.target)
                await self._retire(bridge)
            raise
        self.canary_policy, self._canary_count = policy, 0
        self._event("canary", admitted.version, f"{policy.share:.0%} of traffic, soak {policy.soak_s:g} s")
        if self.lifecycle is not None:
            self.lifecycle.canary_share(self.name, policy.share)
        self._canary_task = asyncio.get_running_loop().create_task(self._watch_canary())
        return {"version": admitted.version, "state": "canary", "detail": f"{policy.share:.0%} of traffic"}

    async def _watch_canary(self, period_s: float = 0.05) -> None:
        while self.canary is not None:
            await asyncio.sleep(period_s)
            c, p = self.canary, self.canary_policy
            verdict = p.verdict(c.requests, c.errors, c.mismatches(), time.monotonic() - c.loaded_at)
            if verdict != "continue":
                async with self._lock:
                    await self._end_canary(verdict, f"{c.requests} requests, {c.errors} errors, "
                                                    f"{c.mismatches()} audit mismatches")
                return

    async def _end_canary(self, verdict: str, detail: str) -> None:
        canary, stable = self.canary, self.serving
        self.canary, self.canary_policy = None, None
        if self.lifecycle is not None:
            self.lifecycle.canary_share(self.name, 0.0)
        if verdict == "promote":
            self.serving = canary  # it already holds the accelerator, where there is one
            await self._retire(stable)
            self._event("promoted", canary.version, detail)
            return
        await self._retire(canary)
        if self.target != EMULATOR:
            self.serving = await self._open(stable.admitted, self.target)
            await self._retire(stable)
        self.refused[canary.version] = f"canary rolled back: {detail}"
        self._event("rolled back", canary.version, detail)

    # ---- pieces ------------------------------------------------------------------------------------------
    def _admit(self, version: int) -> AdmittedVersion:
        return admit(self.entry, version, self.trust)

    async def _open(self, admitted: AdmittedVersion, target: str, audit_all: bool = False) -> Slot:
        """Open `admitted` on `target`, self-test it bit for bit, start it. RepositoryError when any step fails."""
        try:
            service = await asyncio.to_thread(self.open_version, admitted, target, audit_all)
        except Exception as e:
            raise LoadRefused(f"{self.name} version {admitted.version} did not load on {target}: "
                              f"{type(e).__name__}: {e}") from None
        backend = service.backend
        result = await asyncio.to_thread(backend.self_test) if callable(getattr(backend, "self_test", None)) else None
        if result is None or result.passed is not True:
            await asyncio.to_thread(backend.close)
            detail = result.detail if result is not None else "its backend has no self-test"
            raise LoadRefused(f"{self.name} version {admitted.version} failed its self-test on {target}: {detail}")
        await service.start()
        return Slot(admitted, service, target, self_test=result)

    async def _retire(self, slot: Slot) -> None:
        """In-flight requests finish where they started; then the version lets go of its path."""
        if not await slot.drained(self.drain_timeout_s):
            log.warning("%s version %d: %d requests still in flight after %.0f s; closing anyway",
                        self.name, slot.version, slot.in_flight, self.drain_timeout_s)
        await self._close(slot)

    async def _close(self, slot: Slot) -> None:
        try:
            await slot.service.stop()
        finally:
            await asyncio.to_thread(slot.service.backend.close)

    def _event(self, what: str, version: int, detail: str) -> None:
        self.events.append({"time": time.time(), "model": self.name, "version": version, "event": what,
                            "detail": detail})
        del self.events[:-100]
        (log.warning if what in ("refused", "rolled back") else log.info)("%s version %d %s%s", self.name, version,
                                                                          what, f": {detail}" if detail else "")
        if self.lifecycle is not None:
            self.lifecycle.transition(self.name, version, what)

    def describe(self) -> dict:
        def slot(s: Slot | None):
            if s is None:
                return None
            return {"version": s.version, "target": s.target, "signer": s.admitted.signer,
                    "self_test": s.self_test.detail if s.self_test else None, "requests": s.requests,
                    "errors": s.errors, "sha256": s.admitted.manifest.model.sha256}
        return {
            "name": self.name, "policy": self.entry.policy.to_config(), "versions": self.versions,
            "serving": slot(self.serving), "canary": slot(self.canary),
            "canary_share": self.canary_policy.share if self.canary_policy else 0.0,
            "standby": [slot(s) for s in self.standby.values()],
            "refused": {str(k): v for k, v in self.refused.items()}, "events": self.events[-20:],
        }
