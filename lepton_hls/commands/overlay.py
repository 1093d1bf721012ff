"""`lepton-hls overlay DIR --board B`: the accelerator IP, the Vivado project script and, when Vitis HLS and
Vivado are on PATH, the `.bit` + `.hwh` for a PYNQ board."""

from __future__ import annotations


def register(subparsers) -> None:
    from lepton_hls.overlay import DEFAULT_MAX_BATCH, boards

    p = subparsers.add_parser(
        "overlay", help="generate the stream IP and PYNQ overlay scripts; build .bit/.hwh with Vitis HLS + Vivado",
        description="Writes DIR/ip/ (AXI4-Stream wrapper around the hls4ml core) and DIR/overlay/ (hls_ip.tcl for "
        "Vitis HLS, lepton_overlay.tcl for Vivado: Zynq PS, AXI DMA axi_dma_0 in simple mode, lepton_accel_0, one "
        "PL clock). Then runs both tools when they are on PATH and records bitstream, timing and utilization in "
        "the manifest.",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory")
    p.add_argument("--board", required=True, choices=sorted(boards()), help="target board")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"largest batch one DMA transfer must carry; sizes the DMA length register (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="PL clock in MHz (default: the package's HLS clock period)")
    p.add_argument("--jobs", type=int, default=2, help="parallel Vivado implementation jobs")
    p.add_argument("--skip-csim", action="store_true",
                   help="do not check the generated wrapper against the core in C simulation (g++) first")
    p.add_argument("--scripts-only", action="store_true", help="write the IP and scripts, do not run the vendor tools")
    p.set_defaults(func=run)


def run(args) -> int:
    from lepton_hls.overlay import build_overlay, write_overlay_project
    from lepton_hls.vendor.tools import ToolNotFoundError, stderr_progress

    project = write_overlay_project(args.package, args.board, max_batch=args.max_batch,
                                    clock_mhz=args.clock_mhz, jobs=args.jobs, csim=not args.skip_csim)  # fmt: skip
    plan = project.plan
    print(f"lepton-hls overlay: {plan.board} ({plan.part}), {plan.clock_mhz:g} MHz, DMA {plan.dma} "
          f"({plan.dma_length_width}-bit length, batches up to {plan.max_batch}), IP {plan.ip}")
    print(f"  IP sources:     {project.ip.directory}")
    if plan.ip_csim:
        print(f"  IP C sim:       {plan.ip_csim['summary']}")
    print(f"  Vitis HLS:      {project.hls_script}")
    print(f"  Vivado:         {project.vivado_script}")
    if args.scripts_only:
        return 0
    try:
        plan = build_overlay(project, progress=stderr_progress("vendor"))
    except ToolNotFoundError as e:
        raise ToolNotFoundError(e.tools, f"{_purpose(e)}; the scripts above are ready to run where it is installed") from None
    t = plan.timing
    print(f"  bitstream:      {args.package}/{plan.bitstream} (sha256 {plan.bitstream_sha256[:16]}...)")
    print(f"  timing:         WNS {t.get('wns_ns')} ns, WHS {t.get('whs_ns')} ns, {'met' if t.get('met') else 'NOT MET'}")
    used = plan.utilization.get("used", {})
    print("  utilization:    " + ", ".join(f"{k} {v:g}" for k, v in used.items()))
    return 0


def _purpose(e) -> str:
    return "build the overlay" if "vivado" in e.tools else "synthesize the accelerator IP"
