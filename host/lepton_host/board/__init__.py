"""An emulated PYNQ board: the real `pynq` library on any machine, backed by the package's bit-exact model.

    from lepton_host import board
    dev = board.enable()                      # pynq's probe now finds the emulated board
    dev.attach(compute)                       # anything with predict_raw(raw) -> raw
    bit = board.write_overlay(manifest, dir)  # .hwh + placeholder .bit generated from the manifest
    ol = pynq.Overlay(str(bit))               # unmodified pynq from here on

Setting LEPTON_EMULATED_BOARD=1 switches it on at import. It is never on by default, so on a real board
pynq finds the real device.
"""

from __future__ import annotations

import os

from .device import EmulatedBoard, forget_probe
from .faults import Fault, FaultKind
from .hwh import write_overlay

__all__ = ["EmulatedBoard", "Fault", "FaultKind", "enable", "disable", "write_overlay", "is_enabled"]


def enable() -> EmulatedBoard:
    """Switch the emulated board on and make it pynq's active device; return it."""
    EmulatedBoard._enabled = True
    forget_probe()
    from pynq.pl_server.device import Device

    board = EmulatedBoard.instance()
    if not board.missing:
        Device.active_device = board
    return board


def disable() -> None:
    EmulatedBoard._enabled = False
    forget_probe()


def is_enabled() -> bool:
    return EmulatedBoard._enabled


if os.environ.get("LEPTON_EMULATED_BOARD", "") not in ("", "0"):
    enable()
