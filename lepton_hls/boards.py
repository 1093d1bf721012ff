"""The boards lepton-hls targets: one table (`overlays/boards.json`, shipped in the wheel) that `build` (part and
HLS clock), `rtl` (the fabric a design must fit) and `overlay` (the block design's PS and DMA fields) all read.
Adding a board is adding an entry there."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

from lepton_host.errors import LeptonError

from . import resources


class UnknownBoardError(LeptonError):
    """A board name that is not in the board table."""


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    part: str
    hls_clock_ns: float  # the clock hls4ml targets by default for this board
    lut: int
    ff: int
    dsp: int
    bram36: int
    overlay: dict = field(default_factory=dict)  # block-design fields (overlays/lepton_overlay.tcl.tmpl)


@functools.lru_cache(maxsize=1)
def table() -> dict[str, Board]:
    raw = json.loads(resources.path("overlays", "boards.json").read_text())
    return {
        name: Board(name=name, description=b["description"], part=b["part"], hls_clock_ns=float(b["hls_clock_ns"]),
                    overlay=dict(b.get("overlay", {})), **{k: int(v) for k, v in b["resources"].items()})
        for name, b in raw.items()
    }


def names() -> tuple[str, ...]:
    return tuple(table())


def get(name: str) -> Board:
    boards = table()
    if name not in boards:
        raise UnknownBoardError(f"unknown board {name!r}; supported: {', '.join(sorted(boards))}")
    return boards[name]


DEFAULT = "pynq-z2"
