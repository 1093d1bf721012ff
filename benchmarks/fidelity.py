"""Build and verify every public example model and every zoo model with the default configuration.

    python benchmarks/fidelity.py [--samples 5000] [--models NAME ...] [--config YAML]

Prints one row per model and input set (identical rows before the final softmax, argmax agreement after it,
max |diff|, fast engine == C simulation) and writes benchmarks/results/fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT.parent / "shared" / "models" / "example-models"
ZOO = ["jet_tagger", "digits_cnn", "anomaly_ae"]


def example_models() -> list[str]:
    return sorted(str(p) for p in EXAMPLES.glob("*.json")) if EXAMPLES.is_dir() else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--models", nargs="*", help="zoo names or .json paths (default: every example + zoo model)")
    ap.add_argument("--config", help="YAML build configuration applied to every model")
    ap.add_argument("--out", default=str(ROOT / "out" / "fidelity"))
    args = ap.parse_args()

    from lepton_hls.build import build_package
    from lepton_hls.build_config import load_config
    from lepton_hls.progress import Progress, stdout_to_stderr

    cfg = load_config(args.config)
    models = args.models or example_models() + ZOO
    rows = []
    for model in models:
        name = Path(model).stem
        t0 = time.perf_counter()
        try:
            with stdout_to_stderr():
                _, report = build_package(model, Path(args.out) / name, cfg, verify_samples=args.samples, force=True,
                                          progress=Progress(enabled=False))
        except Exception as e:  # a model that fails to build is a result too
            rows.append({"model": name, "error": f"{type(e).__name__}: {e}"})
            print(f"{name}: FAILED {e}", flush=True)
            continue
        seconds = time.perf_counter() - t0
        for s in report["sets"]:
            rows.append({"model": name, "passed": report["passed"], "build_and_verify_s": round(seconds, 1), **s,
                         "first_difference": report.get("first_difference")})
        print(f"{name}: {'PASS' if report['passed'] else 'FAIL'} in {seconds:.0f}s", flush=True)

    print()
    print(f"{'model':22s} {'set':9s} {'n':>6s} {'identical':>10s} {'argmax':>8s} {'max|diff|':>10s} {'engine==csim':>12s} verdict")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:22s} ERROR {r['error']}")
            continue
        am = "-" if r["argmax_agreement"] is None else f"{r['argmax_agreement']:.4f}"
        print(f"{r['model']:22s} {r['name']:9s} {r['samples']:6d} {r['identical_rows']:10.4f} {am:>8s} "
              f"{r['max_abs_diff']:10.3g} {str(r['emulator_identical']):>12s} {'PASS' if r['passed'] else 'FAIL'}")
    out = ROOT / "benchmarks" / "results" / "fidelity.json"
    out.write_text(json.dumps({"command": " ".join(sys.argv), "samples": args.samples, "rows": rows}, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
