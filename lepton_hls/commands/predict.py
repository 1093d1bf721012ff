"""`lepton-hls predict DIR --input X.npy`: run a package on a batch, on the board, the emulated board or the
emulator, and write or summarise the outputs."""

from __future__ import annotations

from pathlib import Path

BACKENDS = ("auto", "board", "emulated-board", "emulator")


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
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--engine", choices=("csim", "fast", "rtl"), default=None,
                   help="bit-exact model behind the emulated board or emulator (default: csim for the emulated "
                   "board, fast for the emulator)")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds a DMA transfer may take (board backends)")
    p.add_argument("--max-batch", type=int, default=None, help="samples per DMA transfer (board backends)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="run a package whose fidelity check failed (a warning is printed)")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from lepton_host.backends import open_backend
    from lepton_host.errors import InputShapeError

    path = Path(args.input)
    if not path.is_file():
        raise InputShapeError(f"input file {path} does not exist")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputShapeError(f"{path} is not a numpy .npy array: {e}") from None
    engine = args.engine or ("fast" if args.backend == "emulator" else "csim")
    load_kw = {}
    if args.backend in ("board", "emulated-board"):
        load_kw = {"timeout_s": args.timeout}
        if args.max_batch:
            load_kw["max_batch"] = args.max_batch
    check_package_verified(args.package, args.allow_unverified, "predict")
    backend = open_backend(args.package, kind=args.backend, engine=engine, **load_kw)
    try:
        y = backend.predict(x)
    finally:
        backend.close()
    if args.output:
        np.save(args.output, y)
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
