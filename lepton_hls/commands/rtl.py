"""`lepton-hls rtl DIR`: open-source RTL (da4ml Verilog/VHDL) and a Verilator emulator for a package."""

from __future__ import annotations

import os


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rtl",
        help="write the package's pipelined RTL core (da4ml) and check its Verilator emulation against the C simulation",
        description="Trace the package's fixed-point engine graph into a pipelined Verilog/VHDL core, build a "
        "Verilator emulator, compare it bit for bit with the C simulation, and record latency (cycles), "
        "initiation interval and LUT/FF/DSP estimates in the manifest.",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory (from `lepton-hls build`)")
    p.add_argument("--clock-ns", type=float, default=5.0, help="target clock period in ns (default 5)")
    p.add_argument("--latency-cutoff", type=float, default=None,
                   help="da4ml's combinational delay budget per pipeline stage (default: the clock period)")
    p.add_argument("--board", default=None, help="board whose fabric the estimate is judged against (default: the package's)")
    p.add_argument("--check-samples", type=int, default=10000, help="inputs compared with the C simulation (0: skip)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="parallel Verilator/g++ jobs (default: the machine's core count)")
    p.add_argument("--no-vhdl", action="store_true", help="write Verilog only")
    p.set_defaults(func=run)


def run(args) -> int:
    from lepton_hls.progress import Progress, stdout_to_stderr
    from lepton_hls.rtl.package import rtl_package

    progress = Progress()
    # Verilator and g++ print to file descriptor 1; progress and their output go to stderr, results to stdout.
    with stdout_to_stderr():
        r = rtl_package(args.package, clock_ns=args.clock_ns, latency_cutoff=args.latency_cutoff, board=args.board,
                        check_samples=args.check_samples, jobs=max(1, args.jobs), vhdl=not args.no_vhdl,
                        log=progress.note, progress=progress)
    chk = r["check"]
    print(f"rtl: {r['latency_cycles']} cycles ({r['latency_ns']:g} ns at {r['clock_ns']:g} ns), II={r['initiation_interval']}, "
          f"~{r['lut_estimate']} LUT / {r['ff_estimate']} FF / {r['dsp_estimate']} DSP, "
          f"{'fits' if r['fits_board'] else 'does NOT fit'} {r['board']}")
    if chk:
        print(f"rtl: bit-identical to {chk['reference']} on {chk['samples']} inputs "
              f"(Verilator build {r['verilator_build_s']:.1f} s)")
    if r["uncovered_layers"]:
        print(f"rtl: not covered by the RTL: {', '.join(r['uncovered_layers'])}")
    return 0
