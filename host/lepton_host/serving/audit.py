"""Online audit of the edge's answers: a sample of them is computed again on the package's bit-exact emulator,
on a thread of its own, and any answer that differs in any bit takes the edge out of service.

Nothing here is on the request path: `offer` only decides whether to sample and puts the answer on a bounded
queue; when the queue is full the audit is dropped (and counted) rather than making a request wait. A fraction
of answers is sampled (deterministically: every 1/fraction-th), and every answer during a window after the
edge comes back into service (`window_s` seconds and at least `window_answers` answers), when a fault that a
self-test did not catch would show first.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lepton_host.errors import LeptonError


class AuditUnavailable(LeptonError):
    """The package has no bit-exact engine to audit the edge against."""


@dataclass
class AuditConfig:
    fraction: float = 0.01  # of edge answers, outside the windows
    window_s: float = 10.0  # after a recovery: audit every answer for this long...
    window_answers: int = 100  # ...and for at least this many answers
    queue_size: int = 64  # answers waiting for the audit thread; beyond it, audits are dropped


@dataclass(frozen=True)
class AuditCounts:
    audited: int
    mismatches: int
    dropped: int


def make_reference(package_dir, manifest, engine: str = "fast") -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """The package's bit-exact engine (`fast`, or `csim`) as the audit's reference: raw features -> the outputs
    for the two ways a host may preprocess them. The manifest divides by the scale; the board runtime
    multiplies by its reciprocal, and where a value lands on a rounding boundary the two can quantize one step
    apart, both faithful to the same real input. An answer that equals either is right."""
    from lepton_host.emulator import load_emulator

    try:
        emu = load_emulator(package_dir, engine)
    except LeptonError as e:
        raise AuditUnavailable(f"cannot audit the edge: the package's {engine} engine does not load ({e})") from None
    pre = manifest.preprocessing
    identity = pre.kind == "identity"
    if not identity:
        mean = np.asarray(pre.mean, dtype=np.float64)
        inv_scale = 1.0 / np.asarray(pre.scale, dtype=np.float64)

    def reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        divided = emu.predict(pre.apply(x))
        if identity:
            return divided, divided
        flat = x.reshape(len(x), -1)
        multiplied = emu.predict(((flat - mean.reshape(-1)) * inv_scale.reshape(-1)).reshape(x.shape))
        return divided, multiplied

    return reference


def mismatching_rows(y: np.ndarray, refs: tuple[np.ndarray, ...]) -> np.ndarray:
    """Rows of `y` that equal none of the reference answers, bit for bit (float64 values on the output grid)."""
    n = len(y)
    y2 = np.asarray(y, dtype=np.float64).reshape(n, -1)
    bad = np.ones(n, dtype=bool)
    for ref in refs:
        bad &= np.any(np.asarray(ref, dtype=np.float64).reshape(n, -1) != y2, axis=1)
    return bad


class Auditor:
    """`offer(x, y)` from the event loop; `on_mismatch(detail)` is called on the audit thread."""

    def __init__(self, reference: Callable[[np.ndarray], tuple[np.ndarray, ...]], config: AuditConfig | None = None,
                 on_mismatch: Callable[[str], None] | None = None,
                 on_count: Callable[[str, int], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.reference = reference
        self.config = config or AuditConfig()
        self._on_mismatch = on_mismatch
        self._on_count = on_count  # ("audited" | "mismatches" | "dropped", n): the metrics
        self._clock = clock
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, self.config.queue_size))
        self._credit = 0.0
        self._window_until = 0.0
        self._window_left = 0
        self.audited = self.mismatches = self.dropped = 0
        self.last_mismatch = ""
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="edge-audit", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)  # may block briefly if full; the thread is draining it
            self._thread.join(5.0)
            self._thread = None

    def start_window(self) -> None:
        """Audit every answer from now for `window_s` seconds and at least `window_answers` answers."""
        self._window_until = self._clock() + self.config.window_s
        self._window_left = self.config.window_answers

    @property
    def in_window(self) -> bool:
        return self._window_left > 0 or self._clock() < self._window_until

    def counts(self) -> AuditCounts:
        return AuditCounts(self.audited, self.mismatches, self.dropped)

    # ---- the request path's side -------------------------------------------------------------------------
    def offer(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Maybe queue one edge answer for audit. -> queued. Never blocks."""
        if self.in_window:
            self._window_left -= 1
        else:
            self._credit += self.config.fraction
            if self._credit < 1.0:
                return False
            self._credit -= 1.0
        try:
            with self._idle:
                self._pending += 1
            self._queue.put_nowait((x, y))
        except queue.Full:
            with self._idle:
                self._pending -= 1
            self.dropped += 1
            self._count("dropped", 1)
            return False
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued audit is done (tests, shutdown). -> done in time."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    # ---- the audit thread ----------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.audit(*item)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def audit(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Compare one answer now. -> it was right."""
        try:
            refs = self.reference(x)
        except Exception as e:  # the reference failing says nothing about the board: count nothing
            self.last_mismatch = f"audit reference failed: {type(e).__name__}: {e}"
            return True
        bad = mismatching_rows(y, refs)
        self.audited += len(y)
        self._count("audited", len(y))
        if not bad.any():
            return True
        k = int(bad.sum())
        i = int(np.argmax(bad))
        self.mismatches += k
        self._count("mismatches", k)
        self.last_mismatch = (
            f"audit: {k} of {len(y)} edge answers differ from the bit-exact emulator; first, row {i}: edge "
            f"{np.asarray(y[i]).reshape(-1)[:8].tolist()} emulator {np.asarray(refs[0][i]).reshape(-1)[:8].tolist()}"
        )
        if self._on_mismatch is not None:
            self._on_mismatch(self.last_mismatch)
        return False

    def _count(self, what: str, n: int) -> None:
        if self._on_count is not None:
            self._on_count(what, n)
