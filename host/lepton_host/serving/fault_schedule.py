"""Board faults on a schedule, for `serve --target emulated-board --fault KIND[:key=value,...]@START[-END]`.

START and END are seconds after the gateway starts serving; without END the fault stays. Kinds and their
parameters are the emulated board's (lepton_host.board.faults): hang, short (keep_fraction), corrupt (mask or
xor_mask, every), slow (delay_s), missing. `step(elapsed)` applies every transition due by then; the gateway
drives it from a task on its event loop, tests call it with the times they choose.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

from lepton_host.board.faults import Fault, FaultKind

from .errors import InvalidOption


class FaultSpecError(InvalidOption):
    """A --fault specification cannot be understood."""


FORM = "KIND[:key=value,...]@START[-END], e.g. corrupt:mask=0x80008000@5-10"
# key -> (Fault field, parser); per kind, the keys it takes.
_KEYS = {
    "delay_s": ("delay_s", float), "delay": ("delay_s", float),
    "mask": ("xor_mask", lambda v: int(v, 0)), "xor_mask": ("xor_mask", lambda v: int(v, 0)),
    "every": ("every", lambda v: int(v, 0)),
    "keep_fraction": ("keep_fraction", float), "keep": ("keep_fraction", float),
}
_KIND_KEYS = {
    FaultKind.HANG: (), FaultKind.MISSING: (),
    FaultKind.SHORT: ("keep_fraction", "keep"),
    FaultKind.CORRUPT: ("mask", "xor_mask", "every"),
    FaultKind.SLOW: ("delay_s", "delay"),
}


@dataclass(frozen=True)
class ScheduledFault:
    fault: Fault
    start_s: float
    end_s: float = math.inf  # inf: never cleared
    spec: str = ""

    def active(self, elapsed: float) -> bool:
        return self.start_s <= elapsed < self.end_s


def _seconds(text: str, what: str, spec: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise FaultSpecError(f"--fault {spec!r}: {what} {text!r} is not a number of seconds ({FORM})") from None
    if not math.isfinite(v) or v < 0:
        raise FaultSpecError(f"--fault {spec!r}: {what} must be 0 or more seconds, got {text}")
    return v


def parse_fault(spec: str) -> ScheduledFault:
    body, at, when = spec.partition("@")
    if not at or not body or not when:
        raise FaultSpecError(f"--fault {spec!r}: expected {FORM}")
    kind_text, _, params = body.partition(":")
    try:
        kind = FaultKind(kind_text.strip().lower())
    except ValueError:
        kinds = ", ".join(k.value for k in FaultKind)
        raise FaultSpecError(f"--fault {spec!r}: unknown fault kind {kind_text!r}; choose one of {kinds}") from None
    kw: dict = {}
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not value.strip():
            raise FaultSpecError(f"--fault {spec!r}: parameter {item!r} is not key=value")
        if key not in _KIND_KEYS[kind]:
            takes = ", ".join(_KIND_KEYS[kind]) or "no parameters"
            raise FaultSpecError(f"--fault {spec!r}: {kind.value} does not take {key!r} (it takes {takes})")
        name, conv = _KEYS[key]
        try:
            kw[name] = conv(value.strip())
        except ValueError:
            raise FaultSpecError(f"--fault {spec!r}: {key}={value} is not a number") from None
    if not kw.get("xor_mask", 1) or not 0 < kw.get("xor_mask", 1) <= 0xFFFFFFFF:
        raise FaultSpecError(f"--fault {spec!r}: mask must flip some of a 32-bit word's bits (0x1..0xffffffff)")
    if kw.get("every", 1) < 1:
        raise FaultSpecError(f"--fault {spec!r}: every must be 1 or more (corrupt every n-th output word)")
    if not 0 <= kw.get("keep_fraction", 0.5) < 1:
        raise FaultSpecError(f"--fault {spec!r}: keep_fraction must be in [0, 1) (the share of words that arrive)")
    if not 0 < kw.get("delay_s", 0.5) < 3600:
        raise FaultSpecError(f"--fault {spec!r}: delay_s must be between 0 and 3600 seconds")
    start_text, dash, end_text = when.partition("-")
    start = _seconds(start_text, "START", spec)
    end = _seconds(end_text, "END", spec) if dash else math.inf
    if end <= start:
        raise FaultSpecError(f"--fault {spec!r}: END ({end_text}) must come after START ({start_text})")
    return ScheduledFault(Fault(kind, **kw), start, end, spec)


def parse_schedule(specs: list[str] | None) -> list[ScheduledFault]:
    """Parse every --fault; refuse two of one kind whose windows overlap (the board holds one of each kind)."""
    faults = [parse_fault(s) for s in specs or []]
    by_kind: dict = {}
    for f in sorted(faults, key=lambda f: f.start_s):
        prev = by_kind.get(f.fault.kind)
        if prev is not None and f.start_s < prev.end_s:
            raise FaultSpecError(f"--fault {f.spec!r} overlaps --fault {prev.spec!r}: one {f.fault.kind.value} "
                                 "fault at a time")
        by_kind[f.fault.kind] = f
    return faults


@dataclass
class FaultSchedule:
    """Applies a schedule to an emulated board (anything with `inject(kind, **params)` and `clear(kind)`)."""

    board: object
    faults: list[ScheduledFault]
    active: set = field(default_factory=set)  # indices into `faults` injected now
    log: list = field(default_factory=list)  # (elapsed, "inject" | "clear", spec)
    started_at: float | None = None  # Unix time at which `run` began (elapsed 0)

    def step(self, elapsed: float) -> list[tuple[str, ScheduledFault]]:
        """Inject the faults whose window holds `elapsed`, clear those whose window has passed. -> changes."""
        changes = []
        for i, f in enumerate(self.faults):  # clears first: a fault may end when the next of its kind starts
            if i in self.active and not f.active(elapsed):
                self.board.clear(f.fault.kind)
                self.active.discard(i)
                changes.append(("clear", f))
        for i, f in enumerate(self.faults):
            if i not in self.active and f.active(elapsed):
                fl = f.fault
                self.board.inject(fl.kind, delay_s=fl.delay_s, xor_mask=fl.xor_mask, every=fl.every,
                                  keep_fraction=fl.keep_fraction)
                self.active.add(i)
                changes.append(("inject", f))
        self.log += [(elapsed, what, f.spec) for what, f in changes]
        return changes

    def next_change(self, elapsed: float) -> float | None:
        """Elapsed time of the next transition after `elapsed`, or None when nothing more will change."""
        times = [t for f in self.faults for t in (f.start_s, f.end_s) if t > elapsed and math.isfinite(t)]
        return min(times) if times else None

    def injected(self) -> list[str]:
        return sorted({self.faults[i].fault.kind.value for i in self.active})

    async def run(self, on_change=None, clock=time.monotonic) -> None:
        """Follow the schedule from now (elapsed 0) on the running loop until nothing more will change."""
        t0 = clock()
        self.started_at = time.time()
        elapsed = 0.0
        while True:
            for what, f in self.step(elapsed):
                if on_change is not None:
                    on_change(what, f)
            nxt = self.next_change(elapsed)
            if nxt is None:
                return
            await asyncio.sleep(max(0.0, nxt - (clock() - t0)))
            elapsed = max(nxt, clock() - t0)
