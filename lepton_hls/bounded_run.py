"""Child processes with a deadline that takes their whole process tree down with them.

Vendor tools and the Verilator flow spawn children of their own (vivado's loader, make -> verilator -> g++,
a simulator), so killing the direct child on expiry would leave the work running. Each child here starts in
a session (and so a process group) of its own, and the group is stopped on expiry, and on any error or
Ctrl-C in the caller: a terminal's Ctrl-C no longer reaches a child outside the foreground group.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lepton_host.errors import LeptonError

# Time a stopped group gets after SIGTERM to remove its lock files and temporaries before SIGKILL.
GRACE_S = 10.0


class TimeoutSettingError(LeptonError):
    """A time limit given in the environment or on a call is not a positive number of seconds."""


def check_timeout(value: float, source: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise TimeoutSettingError(f"{source}={value!r} is not a time limit: give a number of seconds > 0")
    return seconds


def timeout_from_env(var: str, default: float) -> float:
    """The limit set in environment variable `var`, else `default`."""
    raw = os.environ.get(var, "").strip()
    return check_timeout(raw, var) if raw else default


def describe_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 600 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def kill_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever of it is left after `grace_s`."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    # The leader may have gone on SIGTERM while children that ignore it still run (and hold its pipes).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Deadline:
    """Within `with Deadline(proc, timeout_s) as d:`, the process group of `proc` (started with
    start_new_session=True) is stopped once `timeout_s` has passed; `d.expired` says whether it was.
    Leaving the block with an exception stops the group too."""

    def __init__(self, proc: subprocess.Popen, timeout_s: float, grace_s: float = GRACE_S):
        self.proc, self.timeout_s, self.grace_s = proc, timeout_s, grace_s
        self.expired = False
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        if self.proc.poll() is None:
            self.expired = True
            kill_group(self.proc, self.grace_s)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._timer.cancel()
        if self._timer.is_alive():
            self._timer.join()  # a kill under way: let it finish before the caller looks at the outcome
        if exc_type is not None and self.proc.poll() is None:
            kill_group(self.proc, grace_s=1.0)
            self.proc.wait()


@dataclass(frozen=True)
class BoundedRun:
    argv: list[str]
    returncode: int
    expired: bool  # stopped at the deadline (returncode is then the signal's)
    seconds: float


def run_bounded(
    argv: Sequence[str],
    cwd: str | os.PathLike,
    timeout_s: float,
    env: dict[str, str] | None = None,
    stdout: IO | int | None = None,
) -> BoundedRun:
    """Run `argv` to completion or to `timeout_s`, stdout and stderr both to `stdout` (None: inherited).

    Raises OSError when the program cannot be started."""
    start = time.monotonic()
    stderr = None if stdout is None else subprocess.STDOUT
    proc = subprocess.Popen(list(argv), cwd=Path(cwd), env=env, stdout=stdout, stderr=stderr,
                            start_new_session=True)
    with Deadline(proc, timeout_s) as deadline:
        rc = proc.wait()
    return BoundedRun(argv=list(argv), returncode=rc, expired=deadline.expired, seconds=time.monotonic() - start)
