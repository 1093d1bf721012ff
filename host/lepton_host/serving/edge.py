"""Open the edge side of a package as a `lepton_host.backend.Backend` through the board runtime
(`lepton_host.backends`): a real board, the emulated board (real pynq driving the bit-exact model), or the
emulator alone. The gateway sees raw features in, model outputs out, whichever it is."""

from __future__ import annotations

import os

from lepton_host.emulator import ENGINES
from lepton_host.errors import LeptonError

BOARD_KINDS = ("auto", "board", "emulated-board", "emulator")


def open_edge_backend(package_dir: str | os.PathLike, kind: str = "auto", engine: str = "fast"):
    """-> a Backend for `package_dir`. `kind`: board | emulated-board | emulator | auto (a real board when pynq
    finds one, else the emulator); `engine`: the bit-exact model behind the emulated board or the emulator."""
    from lepton_host.backends import open_backend

    if kind not in BOARD_KINDS:
        raise LeptonError(f"unknown edge backend {kind!r}; choose one of {', '.join(BOARD_KINDS)}")
    if engine not in ENGINES:
        raise LeptonError(f"unknown emulator engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return open_backend(package_dir, kind=kind, engine=engine)
