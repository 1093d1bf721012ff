"""Files the build side reads at run time, shipped in the wheel: the HLS and RTL sources we own (`ip/`), the
board designs and board table (`overlays/`) and the C++ testbench (`sim/csim/`). In a checkout they are links to
the repository's own folders, so there is one copy of each."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def path(*parts: str) -> Path:
    """A shipped file or folder as a filesystem path (the wheel installs them unzipped)."""
    return Path(str(resources.files(__name__).joinpath(*parts)))
