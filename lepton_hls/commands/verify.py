"""lepton-hls verify DIR"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="compare a package's C simulation with its model",
        description="Run the model (float64) and the package's C simulation on the same inputs: on the input grid, "
        "off it, and on real data where the zoo has it. Exit status 1 when the package misses its declared fidelity; "
        "the outcome is recorded in the manifest (predict and serve refuse a failed package without "
        "--allow-unverified).",
    )
    p.add_argument("package", metavar="DIR")
    p.add_argument("--samples", type=int, default=2000, help="samples per input set (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data", metavar="X.npy", help="your own model inputs (N, *input_shape), compared as one more "
                   "input set that must keep the declared agreement")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..progress import Progress, stdout_to_stderr
    from ..verify import VerifyArgumentError, verify_package

    if args.samples < 1:
        raise VerifyArgumentError(f"--samples must be at least 1 per input set, got {args.samples}")
    # Progress goes to stderr with or without --json: stdout holds only the result (one JSON object with --json).
    with stdout_to_stderr():
        report = verify_package(args.package, samples=args.samples, seed=args.seed, progress=Progress(),
                                data=read_data(args.data))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_summary(report)
    return 0 if report["passed"] else 1


def print_summary(report: dict) -> None:
    print(f"{'input set':10s} {'samples':>8s} {'identical rows':>15s} {'argmax':>8s} {'max|diff|':>10s} {'engine==csim':>13s}")
    for s in report["sets"]:
        am = "-" if s["argmax_agreement"] is None else f"{s['argmax_agreement']:.4f}"
        print(
            f"{s['name']:10s} {s['samples']:8d} {s['identical_rows']:15.4f} {am:>8s} {s['max_abs_diff']:10.3g} "
            f"{str(s['emulator_identical']):>13s}"
        )
    print("(identical rows and max|diff| before the final softmax; argmax after it)")
    first = report.get("first_difference")
    if first:
        print(
            f"first differing layer ({first['set']}): {first['name']} [{first['layer_class']}, {first['format']}] "
            f"identical rows {first['identical_rows']:.4f}, max|diff| {first['max_abs_diff']:.3g}: {first['cause']}"
        )
        if first.get("suggested_config"):
            print("exact type for it (add to the build's --config YAML and rebuild):")
            print("  " + first["suggested_config"].rstrip().replace("\n", "\n  "))
    off = report.get("identical_rows_off_grid")
    if off is not None and off < 1.0 and report.get("off_grid_explanation"):
        also = "also " if (report.get("identical_rows_on_grid") or 0.0) < 1.0 else ""
        print(f"off_grid rows {also}differ because {report['off_grid_explanation']}")
    for note in report.get("notes", []):
        print(f"note: {note}")
    fid = report["fidelity"]
    verdict = "PASS" if report["passed"] else "FAIL"
    print(
        f"{verdict}: declared fidelity identical rows >= {fid['identical_rows_min']}, "
        f"argmax agreement >= {fid['argmax_agreement_min']}"
    )
    sys.stdout.flush()


def read_data(path):
    if not path:
        return None
    from pathlib import Path

    from .predict import read_batch

    return read_batch(Path(path))
