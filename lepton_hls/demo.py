"""`lepton-hls demo`: the embedded default, end to end, with no board and no vendor tools.

Builds and verifies `jet_tagger` and `digits_cnn`, measures the accelerator's accuracy on real digits through the
bit-exact emulator and the emulator's throughput, prints one table, then (when the serving stack is present)
runs the edge-gateway scenario on the emulated board and the digits cascade (the accelerator with a stronger
cloud model, calibrated on held-out digits and replayed through the gateway).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .build import build_package
from .build_config import load_config
from .progress import Progress, stdout_to_stderr

DEMO_MODELS = ("jet_tagger", "digits_cnn")


def run_demo(out_dir, samples: int = 2000, serving: bool = True) -> dict:
    out_dir = Path(out_dir)
    progress = Progress()
    rows = []
    for name in DEMO_MODELS:
        with progress.step(f"build + verify {name}"), stdout_to_stderr():
            manifest, report = build_package(
                name, out_dir / name, load_config(), verify_samples=samples, force=True, progress=Progress(False)
            )
        rows.append(_row(name, out_dir / name, manifest, report))
    result = {"models": rows}
    _print_table(rows)
    if serving:
        try:
            from .demo_serving import run_serving_demo
        except ImportError:
            run_serving_demo = None
        if run_serving_demo is not None:
            with progress.step("edge gateway + cloud fallback on the emulated board"):
                result["serving"] = run_serving_demo(out_dir / "jet_tagger", out_dir / "serving")
            from .demo_cascade import run_cascade_demo

            with progress.step("Big/LITTLE cascade: digits_cnn at the edge, digits_cloud in the cloud"):
                result["cascade"] = run_cascade_demo(out_dir / "digits_cnn", out_dir / "cascade")
    (out_dir / "demo.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def _row(name: str, pkg_dir: Path, manifest, report: dict) -> dict:
    from . import zoo
    from .package import load

    pkg = load(pkg_dir)
    grid = report["sets"][0]
    row = {
        "model": name,
        "verdict": "PASS" if report["passed"] else "FAIL",
        "identical_rows": grid["identical_rows"],
        "argmax_agreement": grid["argmax_agreement"],
        "engine_equals_csim": all(s["emulator_identical"] for s in report["sets"]),
        "accuracy": None,
    }
    data = zoo.get(name).eval_data()
    if data is not None:
        x, y = data
        pred = pkg.predict_features(x).reshape(len(x), -1).argmax(1)
        row["accuracy"] = float(np.mean(pred == y))
        row["accuracy_samples"] = int(len(x))
    x = np.random.default_rng(1).standard_normal((100_000, *manifest.input.shape))
    pkg.predict(x[:1000])
    t0 = time.perf_counter()
    pkg.predict(x)
    row["emulator_samples_per_s"] = len(x) / (time.perf_counter() - t0)
    return row


def _print_table(rows) -> None:
    print()
    print(f"{'model':12s} {'verdict':7s} {'identical rows':>14s} {'argmax agr.':>11s} {'engine==csim':>12s} "
          f"{'accuracy (real data)':>21s} {'emulator samples/s':>18s}")
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f} (n={r['accuracy_samples']})"
        print(f"{r['model']:12s} {r['verdict']:7s} {r['identical_rows']:14.4f} {r['argmax_agreement']:11.4f} "
              f"{str(r['engine_equals_csim']):>12s} {acc:>21s} {r['emulator_samples_per_s']:18,.0f}")
    print("(identical rows: C simulation vs the float64 model before the final softmax, inputs on the input grid;")
    print(" argmax agreement after the softmax; accuracy: the accelerator's bit-exact emulation on held-out data)")
