"""Finding and running the vendor tools (Vitis HLS, Vivado) without hiding them behind anything.

Each tool is looked up on PATH with `shutil.which`; a missing one raises `ToolNotFoundError` naming it and
how to get it on PATH. A run streams the tool's output line by line to a log file (and to a progress
callback), so a build that takes an hour shows where it is, and a failure names the log and quotes its tail.
A run has a time limit (24 h unless LEPTON_VENDOR_TIMEOUT_S or the caller says otherwise): a tool that hangs
on a licence server or a stuck job is stopped with every process it started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lepton_host.errors import LeptonError

from ..bounded_run import Deadline, check_timeout, describe_seconds, timeout_from_env

SETTINGS_HINT = {
    "vitis-run": "source <Vitis install>/settings64.sh (Vitis 2024.2 or newer, e.g. /tools/Xilinx/Vitis/2024.2)",
    "vitis_hls": "source <Vitis HLS install>/settings64.sh (e.g. /tools/Xilinx/Vitis_HLS/2023.2/settings64.sh)",
    "vivado": "source <Vivado install>/settings64.sh (e.g. /tools/Xilinx/Vivado/2023.2/settings64.sh)",
}


class ToolNotFoundError(LeptonError):
    """A vendor tool the command needs is not on PATH."""

    def __init__(self, tools: Sequence[str], purpose: str):
        self.tools = tuple(tools)
        names = " or ".join(f"`{t}`" for t in self.tools)
        hints = "; or ".join(SETTINGS_HINT.get(t, f"put {t} on PATH") for t in self.tools)
        super().__init__(f"{names} not found on PATH, needed to {purpose}: {hints}")


class ToolFailedError(LeptonError):
    """A vendor tool ran and exited with an error."""


class ToolTimeoutError(ToolFailedError):
    """A vendor tool ran past its time limit and was stopped, with the processes it started."""


TIMEOUT_ENV = "LEPTON_VENDOR_TIMEOUT_S"
# Synthesis and implementation of a large design legitimately take hours; a day means something is stuck.
DEFAULT_TIMEOUT_S = 24 * 3600.0


@dataclass(frozen=True)
class Tool:
    name: str  # the executable's name as looked up
    path: str  # where it was found


def find_tool(names: Sequence[str], purpose: str, env_path: str | None = None) -> Tool:
    """The first of `names` found on PATH (in that order of preference)."""
    for name in names:
        found = shutil.which(name, path=env_path)
        if found:
            return Tool(name=name, path=found)
    raise ToolNotFoundError(names, purpose)


def hls_command(tool: Tool, script: str) -> list[str]:
    """The command line that runs an HLS Tcl script with whichever HLS front end was found."""
    if tool.name == "vitis-run":
        # Vitis 2024.2+ replaced `vitis_hls -f` with the unified `vitis-run` front end (hls4ml 1.x uses this form).
        return [tool.path, "--mode", "hls", "--tcl", script]
    return [tool.path, "-f", script]


def vivado_command(tool: Tool, script: str, tclargs: Sequence[str] = ()) -> list[str]:
    cmd = [tool.path, "-mode", "batch", "-nojournal", "-notrace", "-source", script]
    if tclargs:
        cmd += ["-tclargs", *tclargs]
    return cmd


@dataclass
class ToolRun:
    argv: list[str]
    cwd: Path
    log: Path
    returncode: int
    seconds: float
    tail: list[str] = field(default_factory=list)


def stderr_progress(prefix: str) -> Callable[[str], None]:
    def show(line: str) -> None:
        print(f"[{prefix}] {line}", file=sys.stderr, flush=True)

    return show


def run_tool(
    argv: Sequence[str],
    cwd: str | os.PathLike,
    log: str | os.PathLike,
    progress: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    tail_lines: int = 20,
    timeout_s: float | None = None,
) -> ToolRun:
    """Run a tool to completion, streaming its merged stdout/stderr to `log` and `progress`.

    Raises ToolFailedError (with the log's tail) when it exits non-zero, ToolTimeoutError when it runs past
    `timeout_s` (default: $LEPTON_VENDOR_TIMEOUT_S, else 24 h)."""
    if timeout_s is None:
        limit = timeout_from_env(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    else:
        limit = check_timeout(timeout_s, "timeout_s")
    cwd, log = Path(cwd), Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=tail_lines)
    start = time.monotonic()
    with open(log, "w") as logf:
        logf.write(f"$ {' '.join(argv)}\n# in {cwd}\n")
        logf.flush()
        try:
            proc = subprocess.Popen(
                list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                env=env, errors="replace", start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            raise ToolFailedError(f"could not start {argv[0]}: {e}") from None
        assert proc.stdout is not None
        # The output ends when the last process of the tool's group holding it has gone, on a kill too.
        with Deadline(proc, limit) as deadline:
            for line in proc.stdout:
                logf.write(line)
                line = line.rstrip("\n")
                tail.append(line)
                if progress is not None:
                    progress(line)
            rc = proc.wait()
        if deadline.expired:
            logf.write(f"\n# stopped after {describe_seconds(limit)}: the time limit ({TIMEOUT_ENV})\n")
    run = ToolRun(argv=list(argv), cwd=cwd, log=log, returncode=rc, seconds=time.monotonic() - start, tail=list(tail))
    if deadline.expired:
        raise ToolTimeoutError(
            f"{Path(argv[0]).name} ran past its time limit of {describe_seconds(limit)} and was stopped with the "
            f"processes it started (full log: {log}); if it was still making progress, set {TIMEOUT_ENV} to more "
            f"seconds"
        )
    if rc != 0:
        quoted = "\n  ".join(run.tail[-8:])
        raise ToolFailedError(f"{Path(argv[0]).name} exited with status {rc} (full log: {log}); last lines:\n  {quoted}")
    return run
