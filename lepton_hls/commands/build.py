"""lepton-hls build MODEL --out DIR"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "build",
        help="compile a model into a verified overlay package",
        description="Convert a QKeras/Keras model with hls4ml, compile and verify its C simulation, and write the "
        "overlay package (hls4ml project, emulators, manifest.json).",
    )
    from lepton_hls import zoo

    p.add_argument("model", help=f"zoo name ({', '.join(zoo.names('edge'))}), architecture .json, or full-model .h5")
    p.add_argument("--weights", help="weights .h5 for a .json MODEL (default: <stem>_weights.h5 beside it)")
    p.add_argument("--config", help="YAML build configuration (backend, board, io_type, strategy, reuse_factor, ...)")
    p.add_argument("--out", required=True, help="package directory to write")
    p.add_argument("--board", help="target board (pynq-z2, zcu104, kv260, zcu102); pynq-z2 selects VivadoAccelerator")
    p.add_argument("--backend", choices=("Vitis", "Vivado", "VivadoAccelerator"))
    p.add_argument("--io-type", dest="io_type", choices=("io_parallel", "io_stream"))
    p.add_argument("--clock-ns", dest="clock_ns", type=float)
    p.add_argument("--samples", type=int, default=2000, help="verification samples per input set (default 2000)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out directory")
    p.add_argument("--json", action="store_true", help="print the verification report as JSON")
    p.add_argument("--data", metavar="X.npy", help="your own model inputs (N, *input_shape): verified as one more "
                   "input set, and checked against the input type's range")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..build import build_package
    from .verify import read_data
    from ..build_config import load_config
    from ..progress import Progress

    cfg = load_config(args.config, board=args.board, backend=args.backend, io_type=args.io_type, clock_ns=args.clock_ns)
    from ..progress import stdout_to_stderr

    with stdout_to_stderr():
        manifest, report = build_package(
            args.model, args.out, cfg, weights=args.weights, verify_samples=args.samples, force=args.force,
            progress=Progress(), data=read_data(args.data),
        )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from .verify import print_summary

        print(f"package {args.out}: {manifest.model.name} -> {manifest.hls.backend} {manifest.hls.part}")
        print_summary(report)
    if not report["passed"]:
        print(f"lepton-hls build: the package does not meet its declared fidelity (see above); it is kept in "
              f"{args.out} for inspection, marked failed in its manifest (predict and serve refuse it without "
              "--allow-unverified)", file=sys.stderr)
        return 1
    return 0
