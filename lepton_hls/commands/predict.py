"""`lepton-hls predict DIR --input X.npy`: run a package on a batch, on the board, the emulated board or the
emulator, and write or summarise the outputs."""

from __future__ import annotations

import math
from pathlib import Path

from lepton_host.errors import LeptonError

def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="run an overlay package on a .npy batch (board, emulated board or emulator)",
        description="Raw features in (N, *input_shape), before preprocessing; outputs (N, *output_shape) as float64. "
        "'auto' uses a PYNQ board when pynq finds one, else the emulator.",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory")
    p.add_argument("--input", "-i", required=True, metavar="X.npy", help="input batch (numpy .npy)")
    p.add_argument("--output", "-o", metavar="Y.npy", help="write the outputs here (numpy .npy)")
    from ._target import add_target_arguments

    add_target_arguments(p, legacy="--backend")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds a DMA transfer may take (board backends)")
    p.add_argument("--max-batch", type=int, default=None, help="samples per DMA transfer (board backends)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="run a package whose fidelity check failed (a warning is printed)")
    p.set_defaults(func=run)


class PredictArgumentError(LeptonError):
    """An option of `lepton-hls predict` is out of range, or its output cannot be written."""


def check_options(args) -> None:
    """Refuse option values the backends would misread (a zero or negative DMA timeout or batch) before any
    package is opened."""
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise PredictArgumentError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    if args.max_batch is not None and args.max_batch < 1:
        raise PredictArgumentError(f"--max-batch must be at least 1 sample, got {args.max_batch}")
    if args.output:
        parent = Path(args.output).absolute().parent
        if not parent.is_dir():
            raise PredictArgumentError(
                f"--output {args.output}: directory {parent} does not exist; create it or choose another path"
            )


def read_batch(path: Path):
    """The .npy batch as a numeric array of at least one sample, every value finite (InputShapeError)."""
    import numpy as np

    from lepton_host.errors import InputShapeError

    if not path.is_file():
        raise InputShapeError(f"input file {path} does not exist")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputShapeError(f"{path} is not a numpy .npy array: {e}") from None
    if not isinstance(x, np.ndarray):
        raise InputShapeError(f"{path} holds several arrays (.npz); save the batch alone with numpy.save")
    if x.dtype.kind not in "biuf":
        raise InputShapeError(
            f"{path} holds {x.dtype} values; the accelerator takes real numbers (save the batch as float64)"
        )
    if x.ndim == 0:
        raise InputShapeError(f"{path} holds a single number, not a batch; save an array of shape (N, *input_shape)")
    if len(x) == 0:
        raise InputShapeError(f"{path} holds no samples (shape {x.shape}); save a batch of shape (N, *input_shape)")
    bad = ~np.isfinite(np.asarray(x, dtype=np.float64).reshape(len(x), -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        first = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
        raise InputShapeError(
            f"{path}: {len(rows)} of {len(x)} rows hold NaN or inf (rows {first}); the accelerator's fixed-point "
            "input cannot represent them: drop or impute those rows first"
        )
    return x


def run(args) -> int:
    import numpy as np

    from lepton_host.backends import open_backend

    from ._target import resolve_target

    check_options(args)
    target, engine = resolve_target(args, "predict")
    x = read_batch(Path(args.input))
    load_kw = {}
    if target in ("board", "emulated-board"):
        load_kw = {"timeout_s": args.timeout}
        if args.max_batch is not None:
            load_kw["max_batch"] = args.max_batch
    check_package_verified(args.package, args.allow_unverified, "predict")
    backend = open_backend(args.package, kind=target, engine=engine, **load_kw)
    try:
        y = backend.predict(x)
    finally:
        backend.close()
    if args.output:
        try:
            np.save(args.output, y)
        except OSError as e:
            raise PredictArgumentError(f"--output {args.output}: cannot write the outputs ({e.strerror or e})") from None
    manifest = getattr(backend, "manifest", None)
    summary = f"{len(y)} samples on {backend.name}: output {y.shape[1:]} float64"
    if manifest is not None and manifest.model.task == "classifier" and y.ndim == 2:
        classes = manifest.model.classes
        top = np.argmax(y, axis=1)
        shown = ", ".join(classes[i] if i < len(classes) else str(i) for i in top[:10])
        summary += f"; argmax of the first {min(10, len(top))}: {shown}"
    print(summary + (f"; written to {args.output}" if args.output else ""))
    return 0


def check_package_verified(package, allow_unverified: bool, command: str) -> None:
    """Refuse a package marked failed by its fidelity check (UnverifiedPackageError), or with
    `allow_unverified` warn on stderr in one line."""
    import sys

    from lepton_host.manifest import check_verified, load_manifest

    # the backend that opens the package next checks every artifact's sha256; the digest is checked here
    warning = check_verified(load_manifest(package, verify=False), package, allow_unverified)
    if warning:
        print(f"lepton-hls {command}: warning: {warning}", file=sys.stderr, flush=True)
