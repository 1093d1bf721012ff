"""Where inference runs (`--target`) and on which bit-exact model (`--engine`): one definition for every
command that runs a package. `--board` means the FPGA board everywhere; the inference path's old spellings
(`serve --board emulated-board`, `predict --backend emulator`) still work for this release, with a note."""

from __future__ import annotations

import argparse
import sys

TARGETS = ("auto", "board", "emulated-board", "emulator")
ENGINES = ("fast", "csim", "rtl")


def add_target_arguments(p: argparse.ArgumentParser, legacy: str) -> None:
    p.add_argument("--target", choices=TARGETS, default=None,
                   help="where inference runs: a PYNQ board, the emulated board (real pynq, emulated device), or "
                   "the emulator (default auto: a board when pynq finds one, else the emulator)")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="bit-exact model behind the emulated board or the emulator (default fast)")
    p.add_argument(legacy, dest="legacy_target", choices=TARGETS, default=None, help=argparse.SUPPRESS)


def resolve_target(args, command: str) -> tuple[str, str]:
    """(target, engine) from the arguments; an old spelling is honoured with a deprecation note on stderr."""
    from lepton_host.backends import DEFAULT_ENGINE

    target = args.target
    legacy = getattr(args, "legacy_target", None)
    if legacy is not None:
        flag = "--board" if command == "serve" else "--backend"
        print(f"lepton-hls {command}: note: {flag} {legacy} is deprecated for the inference path; use "
              f"--target {legacy}", file=sys.stderr)
        if target is not None and target != legacy:
            from lepton_host.errors import LeptonError

            raise LeptonError(f"{flag} {legacy} and --target {target} disagree; give --target only")
        target = legacy
    return target or "auto", args.engine or DEFAULT_ENGINE
