"""Emulation throughput: hls4ml's own `predict`, the ctypes C simulation and the fast engine, in one run, on
the same package and the same inputs; all three must agree bit for bit.

    python benchmarks/emulate.py                                  # jet_tagger, built with `lepton-hls build`
    python benchmarks/emulate.py --package out/bench/jet_tagger --samples 200000
    python benchmarks/emulate.py --example qkeras_mnist_cnn --csim-samples 300

hls4ml `predict` runs hls4ml's own loop (`ModelGraph.predict`) on the package's C simulation: on the hls4ml
project under `<package>/hls` (linked with `hls4ml.converters.link_existing_project` in a scratch copy and
recompiled there), or on the in-memory model when `--example` converts one. The per-sample baselines run on
`--csim-samples` inputs, the fast engine on all `--samples`; agreement is checked on the shared inputs.
Writes benchmarks/results/emulate.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO.parent / "shared" / "models" / "example-models"


def _build_with_cli(model: str, out: Path) -> Path:
    if (out / "manifest.json").is_file():
        return out
    if not (REPO / "lepton_hls" / "commands" / "build.py").is_file():
        sys.exit("`lepton-hls build` is not available in this tree: pass --package DIR or --example NAME")
    exe = Path(sys.executable).with_name("lepton-hls")
    cmd = [str(exe) if exe.is_file() else "lepton-hls", "build", model, "--out", str(out)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out


def _build_example(name: str, out: Path):
    """Convert one of the public hls4ml example models with the Vitis backend, io_parallel."""
    import hls4ml
    import tensorflow as tf
    from qkeras.utils import _add_supported_quantized_objects

    from lepton_hls.engine_export import export_emulation

    co: dict = {}
    _add_supported_quantized_objects(co)
    model = tf.keras.models.model_from_json((EXAMPLES / f"{name}.json").read_text(), custom_objects=co)
    model.load_weights(str(EXAMPLES / f"{name}_weights.h5"))
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    hls_model = hls4ml.converters.convert_from_keras_model(
        model, hls_config=cfg, output_dir=str(out / "hls"), backend="Vitis", io_type="io_parallel"
    )
    hls_model.compile()
    export_emulation(hls_model, out)
    return hls_model


def _link_hls_project(package: Path, scratch: Path):
    """hls4ml's own model object for the package's project, recompiled in a scratch copy (the package stays
    untouched)."""
    import hls4ml

    src = package / "hls"
    if not (src / "hls4ml_config.yml").is_file():
        return None
    dst = scratch / "hls"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.so", "*.o"))
    cfg_path = dst / "hls4ml_config.yml"
    lines = cfg_path.read_text().splitlines()
    cfg_path.write_text("\n".join(f"OutputDir: {dst}" if ln.startswith("OutputDir:") else ln for ln in lines) + "\n")
    linked = hls4ml.converters.link_existing_project(str(dst))
    linked.compile()
    return linked


def _timed(fn, x, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(x)
        best = min(best, time.perf_counter() - t0)
    return out, best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--package", type=Path, help="an overlay package directory")
    src.add_argument("--example", help="convert a public hls4ml example model (e.g. qkeras_mnist_cnn) into out/bench/")
    ap.add_argument("--model", default="jet_tagger", help="zoo model to build when no package is given")
    ap.add_argument("--samples", type=int, default=100_000, help="inputs for the fast engine")
    ap.add_argument("--csim-samples", type=int, default=5_000, help="inputs for the two per-sample baselines")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "emulate.json")
    args = ap.parse_args(argv)

    from lepton_host.emulator import CsimEmulator, FastEmulator

    hls_model, hls_source = None, ""
    if args.example:
        package = REPO / "out" / "bench" / args.example
        hls_model = _build_example(args.example, package)
        hls_source = "in-memory hls4ml ModelGraph from the conversion"
    else:
        package = args.package or _build_with_cli(args.model, REPO / "out" / "bench" / args.model)

    csim, fast = CsimEmulator(package), FastEmulator(package)
    n_slow = min(args.csim_samples, args.samples)
    rng = np.random.default_rng(args.seed)
    # Model-domain inputs (already preprocessed), mostly off the input grid as real data would be.
    x = np.ascontiguousarray(rng.normal(0, 1, (args.samples, *csim.input.shape)))
    x_slow = x[:n_slow]

    with tempfile.TemporaryDirectory(prefix="lepton-bench-") as scratch:
        if hls_model is None:
            hls_model = _link_hls_project(Path(package), Path(scratch))
            hls_source = "hls4ml.converters.link_existing_project(<package>/hls), recompiled in a scratch copy"
        rows = []
        if hls_model is not None:
            y_h, t_h = _timed(hls_model.predict, x_slow)
            y_h = np.asarray(y_h, dtype=np.float64).reshape((n_slow, *csim.output.shape))
            rows.append(("hls4ml predict", n_slow, t_h))
        else:
            y_h = None
            hls_source = "not measured (the package has no hls/ project); CsimEmulator runs the same per-sample loop"
        y_c, t_c = _timed(csim.predict, x_slow)
        rows.append(("CsimEmulator (ctypes csim)", n_slow, t_c))
        fast.predict(x[: min(1000, len(x))])  # warm-up: first-touch allocations, BLAS thread start
        y_f, t_f = _timed(fast.predict, x, repeat=3)
        rows.append(("FastEmulator (engine)", args.samples, t_f))

    agree = {"fast_vs_csim": bool(np.array_equal(y_f[:n_slow], y_c))}
    if y_h is not None:
        agree["csim_vs_hls4ml"] = bool(np.array_equal(y_c, y_h))
        agree["fast_vs_hls4ml"] = bool(np.array_equal(y_f[:n_slow], y_h))
    base = rows[0][1] / rows[0][2]
    results = [
        {
            "name": name,
            "samples": n,
            "seconds": round(t, 4),
            "samples_per_s": round(n / t, 1),
            "ratio": round(n / t / base, 2),
        }
        for name, n, t in rows
    ]
    print(f"\npackage {package}  (input {csim.input.shape}, output {csim.output.shape}; baseline: {rows[0][0]})")
    print(f"{'emulator':30s} {'samples':>9s} {'seconds':>9s} {'samples/s':>12s} {'ratio':>8s}")
    for r in results:
        print(f"{r['name']:30s} {r['samples']:9d} {r['seconds']:9.3f} {r['samples_per_s']:12,.0f} {r['ratio']:7.1f}x")
    print("bit-exact:", ", ".join(f"{k}={v}" for k, v in agree.items()))

    try:
        shown = str(Path(package).resolve().relative_to(REPO))
    except ValueError:
        shown = str(Path(package).resolve())
    report = {
        "package": shown,
        "input_shape": list(csim.input.shape),
        "output_shape": list(csim.output.shape),
        "hls4ml_predict_source": hls_source,
        "results": results,
        "bit_exact": agree,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.is_file():
        # One file, one entry per package: re-running for another model keeps the others.
        try:
            previous = json.loads(args.out.read_text())
            runs = {r["package"]: r for r in previous.get("runs", [])}
        except (json.JSONDecodeError, KeyError, TypeError):
            runs = {}
    else:
        runs = {}
    runs[shown] = report
    args.out.write_text(json.dumps({"runs": list(runs.values())}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(agree.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
