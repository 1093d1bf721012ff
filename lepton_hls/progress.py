"""Progress lines for long steps, on stderr so that stdout stays machine-readable (`--json`)."""

from __future__ import annotations

import contextlib
import sys
import time


class Progress:
    def __init__(self, enabled: bool = True, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._n = 0

    @contextlib.contextmanager
    def step(self, what: str):
        self._n += 1
        n = self._n
        self._emit(f"[{n}] {what} ...")
        t0 = time.perf_counter()
        try:
            yield
        except BaseException:
            self._emit(f"[{n}] {what}: failed after {time.perf_counter() - t0:.1f}s")
            raise
        self._emit(f"[{n}] {what}: done in {time.perf_counter() - t0:.1f}s")

    def note(self, msg: str) -> None:
        self._emit(f"    {msg}")

    def _emit(self, line: str) -> None:
        if self.enabled:
            print(line, file=self.stream, flush=True)


@contextlib.contextmanager
def stdout_to_stderr():
    """hls4ml and the compilers it runs print to file descriptor 1; keep that off stdout so `--json` output
    stays one JSON object."""
    import os

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
