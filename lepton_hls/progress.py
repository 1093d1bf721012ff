"""Progress lines for long steps, on stderr so that stdout stays machine-readable (`--json`).

    progress = Progress()
    with progress.step("compare on 3 input sets"):       # [2] compare on 3 input sets ... / done in 4.1s
        with progress.bar(3, "input sets") as bar:
            for name in sets:
                ...
                bar.advance(detail=name)                 # redrawn in place on a terminal, lines otherwise
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

BAR_WIDTH = 24
LINES_PER_BAR = 10  # when stderr is not a terminal: at most this many progress lines per bar (plus the last)


class Progress:
    def __init__(self, enabled: bool = True, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._n = 0
        self._bar: Bar | None = None  # the bar drawn on a terminal now

    @contextlib.contextmanager
    def step(self, what: str, heartbeat_s: float | None = None):
        """A numbered step. With `heartbeat_s`, a step that runs one long opaque call (a compiler) says every
        `heartbeat_s` seconds that it is still running."""
        self._n += 1
        n = self._n
        self._emit(f"[{n}] {what} ...")
        t0 = time.perf_counter()
        beat = _Heartbeat(lambda s: self._emit(f"[{n}] {what}: still running ({s:.0f}s)"), heartbeat_s) \
            if heartbeat_s and self.enabled else None
        try:
            yield
        except BaseException:
            if beat is not None:
                beat.stop()
            self._emit(f"[{n}] {what}: failed after {time.perf_counter() - t0:.1f}s")
            raise
        if beat is not None:
            beat.stop()
        self._emit(f"[{n}] {what}: done in {time.perf_counter() - t0:.1f}s")

    def bar(self, total: int, what: str) -> Bar:
        return Bar(self, total, what)

    def note(self, msg: str) -> None:
        self._emit(f"    {msg}")

    def _emit(self, line: str) -> None:
        if not self.enabled:
            return
        bar = self._bar
        if bar is not None and bar._drawn:
            # a line printed while a bar is drawn on a terminal takes the bar's place; the bar is redrawn below
            self.stream.write("\r\x1b[K" + line + "\n")
            bar._redraw()
        else:
            print(line, file=self.stream, flush=True)

    @property
    def _tty(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # a closed stream
            return False


class Bar:
    """A text progress bar for a loop of `total` items: redrawn with '\\r' on a terminal; on a pipe or a log
    file, one line per tenth of the way (so a log shows progress without a line per item)."""

    def __init__(self, progress: Progress, total: int, what: str) -> None:
        self.progress, self.total, self.what = progress, max(int(total), 0), what
        self.done = 0
        self._tty = progress.enabled and progress._tty
        self._printed = -1  # the last tenth printed (not a terminal)
        self._t0 = time.perf_counter()
        self._drawn = False
        self._detail = ""

    def __enter__(self) -> Bar:
        self._draw("")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def advance(self, n: int = 1, detail: str = "") -> None:
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        self._draw(detail)

    def close(self) -> None:
        if self._tty and self._drawn:
            self.progress.stream.write("\n")
            self.progress.stream.flush()
        self._drawn = False
        if self.progress._bar is self:
            self.progress._bar = None

    def line(self, detail: str = "") -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * BAR_WIDTH))
        text = (f"    {self.what} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total} "
                f"{time.perf_counter() - self._t0:.0f}s")
        return f"{text} {detail}".rstrip()

    def _redraw(self) -> None:
        self.progress.stream.write("\r\x1b[K" + self.line(self._detail))
        self.progress.stream.flush()
        self._drawn = True

    def _draw(self, detail: str) -> None:
        if not self.progress.enabled:
            return
        if self._tty:
            self._detail = detail
            self.progress._bar = self
            self._redraw()
            return
        tenth = LINES_PER_BAR * self.done // self.total if self.total else LINES_PER_BAR
        if tenth > self._printed:
            self._printed = tenth
            self.progress._emit(self.line(detail))


class _Heartbeat:
    def __init__(self, emit, every_s: float) -> None:
        self._emit, self._every = emit, every_s
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._emit(time.perf_counter() - self._t0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


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
