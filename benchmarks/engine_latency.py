"""Fast engine latency per call: the compiled plan against the node-by-node interpreter, at batch 1, 16 and 256.

    python benchmarks/engine_latency.py                  # jet_tagger and digits_cnn, built into out/bench/
    python benchmarks/engine_latency.py --package out/bench/jet_tagger --calls 20000

Contenders, per package and batch size, on the same inputs, interleaved in rounds (so a busy machine slows them
alike), their answers checked equal bit for bit:

- interpreted: `FixedFormat.quantize`, `Engine.run_raw_reference`, `FixedFormat.to_float`; what
  `FastEmulator.predict` ran before the compiled plan;
- FastEmulator.predict: the package's fast emulator as the host runtime loads it (quantize, the compiled
  `run_raw`, to_float);
- Engine.predict: the compiled plan with the input's quantization and the output's scaling fused into it.

Prints a table (µs per call, p50 and p99; samples/s at the median) and writes
benchmarks/results/engine_latency.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from emulate import _build_with_cli

REPO = Path(__file__).resolve().parents[1]
MODELS = ("jet_tagger", "digits_cnn")
BATCHES = (1, 16, 256)
ROUNDS = 10


def _contenders(package: Path):
    from lepton_host.emulator import FastEmulator

    em = FastEmulator(package)
    engine = em.engine
    fin, fout = engine.input_node.format, engine.output_node.format
    return em, {
        "interpreted": lambda x: fout.to_float(engine.run_raw_reference(fin.quantize(x))),
        "FastEmulator.predict": em.predict,
        "Engine.predict": engine.predict,
    }


def _measure(fns: dict, x: np.ndarray, calls: int) -> dict[str, np.ndarray]:
    """Per-call wall times (s) of each contender, `calls` of them, taken in ROUNDS interleaved rounds."""
    times = {name: [] for name in fns}
    per_round = max(1, calls // ROUNDS)
    clock = time.perf_counter
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            fn(x)  # warm: the plan binds its buffers for this batch size on first use
            t = np.empty(per_round)
            for i in range(per_round):
                t0 = clock()
                fn(x)
                t[i] = clock() - t0
            times[name].append(t)
    return {name: np.concatenate(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, action="append", help="a package directory (repeatable)")
    ap.add_argument("--calls", type=int, default=10_000, help="timed calls per contender at batch 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engine_latency.json")
    args = ap.parse_args()
    packages = args.package or [_build_with_cli(m, REPO / "out" / "bench" / m) for m in MODELS]

    rng = np.random.default_rng(args.seed)
    rows = []
    load_before = os.getloadavg()[0]
    for package in packages:
        em, fns = _contenders(package)
        model = package.name
        for batch in BATCHES:
            x = rng.normal(0, 1, (batch,) + em.input.shape)
            answers = {name: fn(x) for name, fn in fns.items()}
            for name, got in answers.items():
                if not np.array_equal(got, answers["interpreted"]):
                    raise SystemExit(f"{model} batch {batch}: {name} differs from the interpreter")
            calls = max(ROUNDS, args.calls // {1: 1, 16: 3, 256: 30}.get(batch, batch))
            for name, t in _measure(fns, x, calls).items():
                p50, p99 = np.percentile(t, [50, 99]) * 1e6
                rows.append({"model": model, "batch": batch, "contender": name, "calls": len(t),
                             "p50_us": round(p50, 1), "p99_us": round(p99, 1),
                             "samples_per_s": round(batch / (p50 * 1e-6))})

    print(f"{'model':12} {'batch':>5}  {'contender':22} {'p50 µs':>9} {'p99 µs':>9} {'samples/s':>12}")
    for r in rows:
        print(f"{r['model']:12} {r['batch']:>5}  {r['contender']:22} {r['p50_us']:>9.1f} {r['p99_us']:>9.1f} "
              f"{r['samples_per_s']:>12,}")
    result = {
        "rows": rows,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)},
        "numpy": np.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
