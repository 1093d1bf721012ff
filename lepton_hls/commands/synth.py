"""`lepton-hls synth DIR`: Vitis HLS C synthesis and C/RTL co-simulation of the package's hls4ml project
(hls4ml's build_prj.tcl) and Vivado out-of-context synthesis; latency, II, resources and timing go into the
manifest."""

from __future__ import annotations

SYNTH_REPORT = "reports/synth.json"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth", help="run Vitis HLS C synthesis + C/RTL co-simulation and Vivado OOC synthesis on the package",
        description="Runs DIR/hls/build_prj.tcl with vitis-run (Vitis 2024.2+) or vitis_hls, then parses "
        "csynth.xml, the co-simulation report and vivado_synth.rpt into DIR/reports/synth.json and the manifest.",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory")
    p.add_argument("--csim", action="store_true", help="also run the tool's C simulation")
    p.add_argument("--no-cosim", action="store_true", help="skip C/RTL co-simulation")
    p.add_argument("--no-vsynth", action="store_true", help="skip Vivado out-of-context synthesis")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from lepton_host.manifest import load_manifest

    from lepton_hls.report_record import record_report
    from lepton_hls.vendor.hls4ml_build import run_hls4ml_build
    from lepton_hls.vendor.tools import stderr_progress

    pkg = Path(args.package)
    manifest = load_manifest(pkg)
    result = run_hls4ml_build(pkg / "hls", project=manifest.hls.project_name, csim=args.csim,
                              cosim=not args.no_cosim, vsynth=not args.no_vsynth,
                              log_dir=pkg / "reports", progress=stderr_progress("hls"))  # fmt: skip
    report = _relative_sources(result.to_dict(), pkg)
    out = pkg / SYNTH_REPORT
    record_report(pkg, load_manifest(pkg, verify=False), "synth", report, report_file=SYNTH_REPORT)
    c = result.csynth
    if c is not None:
        print(f"lepton-hls synth: {c.top} on {c.part}: latency {c.latency_min}-{c.latency_max} cycles, "
              f"II {c.interval_min}-{c.interval_max}, estimated clock {c.estimated_clock_ns} ns "
              f"(target {c.target_clock_ns} ns)")
        print("  HLS resources: " + ", ".join(f"{k} {v}" for k, v in c.resources.items()))
    if result.cosim is not None:
        print(f"  co-simulation ({result.cosim.rtl}): {result.cosim.status}, latency {result.cosim.latency_max} cycles")
    if result.vivado is not None:
        print("  Vivado OOC synthesis: " + ", ".join(f"{k} {v:g}" for k, v in result.vivado.used.items()))
    print(f"  report: {out}")
    return 0


def _relative_sources(report: dict, pkg) -> dict:
    """Report paths inside the package are stored relative to it, so the package can move."""
    from pathlib import Path

    root = Path(pkg).resolve()

    def rel(p):
        try:
            return Path(p).resolve().relative_to(root).as_posix()
        except (ValueError, TypeError):
            return p

    out = dict(report, log=rel(report.get("log")))
    for key in ("csynth", "cosim", "vivado_synth"):
        if out.get(key):
            out[key] = dict(out[key], source=rel(out[key].get("source")))
    return out
