"""RTL in hardware terms, per model: pipeline latency (cycles, ns at the target clock), initiation interval,
LUT/FF estimates, Verilator build time and emulation throughput, and bit-identity with the C simulation.

    python benchmarks/rtl.py                                  # zoo models, built with `lepton-hls build`
    python benchmarks/rtl.py --models jet_tagger --samples 100000
    python benchmarks/rtl.py --package out/bench/jet_tagger   # an existing package

Packages are built (or reused) under --work; `lepton-hls rtl` runs on each (its report lands in the
manifest). The jet tagger is set beside hls4ml's published figure for the same architecture (Vitis HLS,
xcu250 at 200 MHz: 14 cycles = 70 ns with ap_fixed<16,6>; 12 cycles = 60 ns for the 6-bit QKeras version).
Writes benchmarks/results/rtl.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ZOO = ["anomaly_ae", "digits_cnn", "jet_tagger"]
PUBLISHED = {
    "jet_tagger": {
        "source": "hls4ml jet tagger 16-64-32-32-5, Vitis HLS estimate, xcu250 @ 200 MHz",
        "ap_fixed<16,6>": {"cycles": 14, "ns": 70},
        "qkeras 6-bit": {"cycles": 12, "ns": 60, "lut": 42000, "dsp": 34},
    }
}


def _cli(*args) -> None:
    exe = Path(sys.executable).with_name("lepton-hls")
    cmd = [str(exe) if exe.is_file() else "lepton-hls", *args]
    subprocess.run(cmd, check=True)


def ensure_package(model: str, work: Path) -> Path:
    out = work / Path(model).stem
    if not (out / "manifest.json").is_file():
        _cli("build", model, "--out", str(out), "--force")
    return out


def bench_package(pkg: Path, clock_ns: float, samples: int, rebuild: bool, jobs: int) -> dict:
    from lepton_hls.rtl.package import check_inputs, reference_raw
    from lepton_host.manifest import load_manifest
    from lepton_host.rtl_emulator import RtlEmulator

    rep = load_manifest(pkg, verify=False).reports.get("rtl")
    if rebuild or not rep or rep.get("clock_ns") != clock_ns:
        _cli("rtl", str(pkg), "--clock-ns", str(clock_ns), "--check-samples", "10000", "--jobs", str(jobs))
        rep = load_manifest(pkg, verify=False).reports["rtl"]
    emu = RtlEmulator(pkg)
    raw = check_inputs(emu.input.format, emu.input.shape, samples, seed=11)
    emu.predict_raw(raw[:100])
    t0 = time.perf_counter()
    got = emu.predict_raw(raw)
    t_emu = time.perf_counter() - t0
    n_ref = min(samples, 20000)
    identical = bool(np.array_equal(got[:n_ref], reference_raw(pkg, emu, raw[:n_ref])))
    m = load_manifest(pkg, verify=False)
    return {
        "model": m.model.name,
        "cycles": rep["latency_cycles"],
        "ii": rep["initiation_interval"],
        "clock_ns": rep["clock_ns"],
        "latency_ns": rep["latency_ns"],
        "lut_estimate": rep["lut_estimate"],
        "ff_estimate": rep["ff_estimate"],
        "dsp_estimate": rep["dsp_estimate"],
        "fits": f"{rep['board']}: {'yes' if rep['fits_board'] else 'no'}",
        "verilator_build_s": rep["verilator_build_s"],
        "emulation_samples_per_s": round(samples / t_emu),
        "bit_identical": identical,
        "reference": "csim" if not rep["uncovered_layers"] else f"engine:{rep['output_layer']} (before {', '.join(rep['uncovered_layers'])})",
        "checked_samples": n_ref,
        "command_check": rep.get("check"),
        "published": PUBLISHED.get(m.model.name),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=ZOO)
    ap.add_argument("--package", action="append", default=[], help="an existing package (repeatable)")
    ap.add_argument("--work", default=str(REPO / "out" / "bench_rtl"))
    ap.add_argument("--clock-ns", type=float, default=5.0)
    ap.add_argument("--samples", type=int, default=100000)
    ap.add_argument("--rebuild", action="store_true", help="rerun `lepton-hls rtl` even when a report exists")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "rtl.json"))
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    pkgs = [Path(p) for p in a.package] or [ensure_package(m, work) for m in a.models]
    rows = [bench_package(p, a.clock_ns, a.samples, a.rebuild, a.jobs) for p in pkgs]
    cols = ["model", "cycles", "ii", "latency_ns", "lut_estimate", "ff_estimate", "fits", "verilator_build_s",
            "emulation_samples_per_s", "bit_identical"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    for r in rows:
        if r["published"]:
            p = r["published"]
            print(f"{r['model']}: da4ml RTL {r['cycles']} cycles = {r['latency_ns']:g} ns at {r['clock_ns']:g} ns, "
                  f"~{r['lut_estimate']} LUT, 0 DSP; published hls4ml: {p['ap_fixed<16,6>']['cycles']} cycles "
                  f"({p['ap_fixed<16,6>']['ns']} ns, ap_fixed<16,6>), {p['qkeras 6-bit']['cycles']} cycles "
                  f"({p['qkeras 6-bit']['ns']} ns, 6-bit QKeras, ~42k LUT, 34 DSP)")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"host": platform.node(), "clock_ns": a.clock_ns, "samples": a.samples, "rows": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["bit_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
