"""The `lepton-hls` command as the tests run it: the CLI of the interpreter running the tests (whatever
environment that is), never a path into a particular virtual environment."""

from __future__ import annotations

import subprocess
import sys

CLI = [sys.executable, "-m", "lepton_hls.cli"]


def run_cli(*args, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """`lepton-hls ARGS...` in a subprocess, its output captured as text; `kw` goes to subprocess.run (env,
    cwd)."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)
