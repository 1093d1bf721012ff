"""Layer coverage: every layer kind of lepton_host.opset through check, build, verify, the fast engine and the RTL
tracer, with the default configuration, on the tiny models of lepton_hls/zoo/layer_models.py.

    python benchmarks/coverage.py [--models NAME ...] [--samples 2000] [--backends Vivado] [--io-types io_stream]

Prints one row per model (check time, build+verify time, verdict, identical rows, agreement, engine == C
simulation, RTL tracer), one row per layer kind (aggregated over the models that contain it), and hls4ml
1.3.0's own list of Keras/QKeras layers beside what lepton-hls accepts. Writes benchmarks/results/coverage.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its name would shadow the `coverage` package
# that numba (under da4ml) imports.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)


def rtl_verdict(package: Path) -> str:
    """'traced' when the RTL tracer follows the whole package, else its refusal (no Verilator build here)."""
    from lepton_hls.rtl.errors import RtlCoverageError
    from lepton_hls.rtl.graph import load_engine_ir
    from lepton_hls.rtl.tracer import trace

    try:
        traced = trace(load_engine_ir(package / "engine"))
    except RtlCoverageError as e:
        return f"refused: {e}"
    return "traced" + (f" (leaves out {', '.join(traced.uncovered)})" if traced.uncovered else "")


def run_model(lm, out_root: Path, samples: int) -> dict:
    from lepton_hls.build import build_package, check_spec, resolve_model
    from lepton_hls.build_config import load_config
    from lepton_hls.progress import Progress, stdout_to_stderr

    row: dict = {"model": lm.name, "ops": list(lm.ops), "config": lm.config, "note": lm.note}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{lm.name}.h5"
        lm.make().save(path)
        cfg = load_config(None, **lm.config)
        t0 = time.perf_counter()
        try:
            check_spec(resolve_model(str(path)), cfg)
            row["check"] = "ok"
        except Exception as e:
            row["check"] = f"refused: {e}"
        row["check_s"] = round(time.perf_counter() - t0, 2)
        if row["check"] != "ok":
            return row
        t0 = time.perf_counter()
        try:
            with stdout_to_stderr():
                _, report = build_package(str(path), out_root / lm.name, cfg, verify_samples=samples, force=True,
                                          progress=Progress(enabled=False))
        except Exception as e:  # a model that fails to build is a result too
            row.update(build=f"failed: {type(e).__name__}: {e}", build_s=round(time.perf_counter() - t0, 1))
            return row
    grid = report["sets"][0]
    row.update(
        build="ok",
        build_s=round(time.perf_counter() - t0, 1),
        passed=report["passed"],
        identical_rows=grid["identical_rows"],
        agreement=grid["argmax_agreement"],
        max_abs_diff=grid["max_abs_diff"],
        engine_eq_csim=all(s["emulator_identical"] for s in report["sets"]),
        rtl=rtl_verdict(out_root / lm.name),
    )
    return row


def per_kind(rows: list[dict]) -> dict:
    from lepton_host import opset

    table = {}
    for kind in opset.KINDS:
        if kind.op == "input":
            continue
        mine = [r for r in rows if kind.op in r["ops"]]
        table[kind.op] = {
            "models": [r["model"] for r in mine],
            "check": bool(mine) and all(r.get("check") == "ok" for r in mine),
            "build": bool(mine) and all(r.get("build") == "ok" for r in mine),
            "exact": bool(mine) and all(r.get("passed") and (r.get("identical_rows") == 1.0 or not kind.exact
                                                              or r["note"]) for r in mine),
            "engine_eq_csim": bool(mine) and all(r.get("engine_eq_csim") for r in mine),
            "rtl": "refused: " + kind.rtl if kind.rtl else (
                "traced: " + ", ".join(r["model"] for r in mine if r.get("rtl", "").startswith("traced"))
                if any(r.get("rtl", "").startswith("traced") for r in mine)
                else "tracer op (its models here also hold refused kinds)"
            ),
        }
        if not mine:
            table[kind.op]["rtl"] = "no layer model: " + (kind.summary.split("(")[-1].rstrip(")") if "(" in kind.summary
                                                          else "not reachable from Keras")
    return table


def hls4ml_side_by_side() -> list[dict]:
    from hls4ml.converters.keras_v2_to_hls import get_supported_keras_layers

    from lepton_host import opset
    from lepton_hls.model_check import HINTS, KERAS_RULES

    out = []
    for cls in sorted(set(get_supported_keras_layers())):
        ours = cls in KERAS_RULES
        out.append({"keras_class": cls, "lepton_hls": "yes" if ours else "no",
                    "why_not": "" if ours else HINTS.get(cls, "not in the opset (see README, Supported layers)")})
    extra = sorted(set(opset.keras_classes()) - {r["keras_class"] for r in out} - {"InputLayer"})
    for cls in extra:
        out.append({"keras_class": cls, "lepton_hls": "yes (alias)", "why_not": ""})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="layer model names (default: all)")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "out" / "coverage"))
    ap.add_argument("--backends", nargs="*", default=[], help="also build every model for these hls4ml backends")
    ap.add_argument("--io-types", nargs="*", default=[], help="also build every model with these io types")
    args = ap.parse_args()

    import dataclasses

    from lepton_hls.zoo.layer_models import MODELS, get

    models = [get(n) for n in args.models] if args.models else list(MODELS)
    variants = [{"backend": b} for b in args.backends] + [{"io_type": t} for t in args.io_types]
    models += [
        dataclasses.replace(lm, name=f"{lm.name}@{'+'.join(v.values())}", config={**lm.config, **v})
        for v in variants
        for lm in list(models)
        if not set(v.items()) <= set(lm.config.items())
    ]
    rows = []
    for lm in models:
        row = run_model(lm, Path(args.out), args.samples)
        rows.append(row)
        verdict = "PASS" if row.get("passed") else row.get("build") or row.get("check")
        print(f"{lm.name}: {verdict} (check {row['check_s']}s, build {row.get('build_s', '-')}s)", flush=True)

    print()
    print(f"{'model':24s} {'check':>6s} {'build+verify':>12s} {'verdict':8s} {'identical':>9s} {'agree':>7s} "
          f"{'engine==csim':>12s}  rtl")
    for r in rows:
        ag = "-" if r.get("agreement") is None else f"{r['agreement']:.4f}"
        ident = "-" if r.get("identical_rows") is None else f"{r['identical_rows']:.4f}"
        verdict = "PASS" if r.get("passed") else ("FAIL" if r.get("build") == "ok" else "ERROR")
        print(f"{r['model']:24s} {r['check_s']:5.2f}s {str(r.get('build_s', '-')):>11s}s {verdict:8s} {ident:>9s} "
              f"{ag:>7s} {str(r.get('engine_eq_csim', '-')):>12s}  {r.get('rtl', r.get('build', r['check']))[:70]}")

    kinds = per_kind(rows)
    print()
    print(f"{'layer kind':12s} {'check':6s} {'build':6s} {'exact':6s} {'eng==csim':9s}  rtl")
    for op, k in kinds.items():
        yn = lambda b: "yes" if b else "NO"  # noqa: E731
        print(f"{op:12s} {yn(k['check']):6s} {yn(k['build']):6s} {yn(k['exact']):6s} {yn(k['engine_eq_csim']):9s}  "
              f"{k['rtl'][:70]}")

    side = hls4ml_side_by_side()
    print()
    print("hls4ml 1.3.0's Keras/QKeras layers beside lepton-hls:")
    for s in side:
        print(f"  {s['keras_class']:28s} {s['lepton_hls']:12s} {s['why_not']}")

    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "coverage.json").write_text(json.dumps({"models": rows, "kinds": kinds, "hls4ml": side}, indent=2))
    return 0 if all(r.get("passed") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
