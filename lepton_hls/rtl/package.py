"""`lepton-hls rtl` on an overlay package: trace its engine IR, write `rtl/`, build the Verilator emulator,
check it bit for bit against the C simulation, and record the result in the manifest."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lepton_host.emulator import CsimEmulator, FastEmulator
from lepton_host.errors import LeptonError, ManifestError
from lepton_host.manifest import MANIFEST_NAME, load_manifest
from lepton_host.rtl_emulator import RtlEmulator

from .. import boards
from ..compat.da4ml import solver_is_cached
from ..report_record import record_report, write_json
from .build import RtlReport, build_rtl
from .graph import load_engine_ir
from .tracer import trace

RTL_DIR = "rtl"
REPORT = Path("reports") / "rtl.json"
CHECK_CHUNKS = 20  # the check runs in this many slices, so that its progress shows


class RtlMismatchError(LeptonError):
    """The Verilator emulation differs from the C simulation: the tracer reproduced some layer inexactly."""


@dataclass
class RtlCheck:
    reference: str  # "csim" or "engine:<layer>" when the RTL stops before an uncovered tail
    samples: int
    identical_rows: float
    max_abs_raw_diff: int
    emulation_s: float
    reference_s: float


def check_inputs(fmt, shape, n: int, seed: int = 0) -> np.ndarray:
    """Raw test inputs: half spread over the whole input range (wrap and saturation paths), half within 1/16 of
    it (where trained models live)."""
    rng = np.random.default_rng(seed)
    half = n // 2
    wide = rng.integers(fmt.raw_min, fmt.raw_max + 1, size=(half,) + tuple(shape))
    lo, hi = (fmt.raw_min // 16, fmt.raw_max // 16) if fmt.signed else (0, fmt.raw_max // 16)
    narrow = rng.integers(lo, hi + 1, size=(n - half,) + tuple(shape))
    return np.concatenate([wide, narrow]).astype(np.int64)


def reference_raw(package_dir, emu: RtlEmulator, raw: np.ndarray) -> np.ndarray:
    """What the RTL must output for `raw`: the C simulation's output, or, when the RTL stops before an
    uncovered tail (softmax), that layer's output from the package's integer engine (which `verify` holds
    bit-identical to the C simulation: the C simulation itself exposes only the final output)."""
    return _reference(package_dir, emu)(raw)


def _reference(package_dir, emu: RtlEmulator):
    """reference_raw's model, loaded once for many calls."""
    if emu.uncovered:
        fast = FastEmulator(package_dir)
        return lambda raw: np.asarray(fast.trace_raw(raw)[emu.output.name], dtype=np.int64)
    csim = CsimEmulator(package_dir)
    return lambda raw: np.asarray(csim.predict_raw(raw), dtype=np.int64)


def check_against_csim(package_dir, emu: RtlEmulator, n: int = 10000, seed: int = 0, progress=None) -> RtlCheck:
    root = Path(package_dir)
    raw = check_inputs(emu.input.format, emu.input.shape, n, seed)
    reference = f"engine:{emu.output.name}" if emu.uncovered else "csim"
    chunks = np.array_split(np.arange(n), min(CHECK_CHUNKS, n))
    reference_of = _reference(root, emu)
    got, ref, t_emu, t_ref = [], [], 0.0, 0.0
    with (progress.bar(n, "inputs") if progress else contextlib.nullcontext()) as bar:
        for idx in chunks:
            t0 = time.perf_counter()
            got.append(emu.predict_raw(raw[idx]))
            t_emu += time.perf_counter() - t0
            t0 = time.perf_counter()
            ref.append(reference_of(raw[idx]))
            t_ref += time.perf_counter() - t0
            if bar is not None:
                bar.advance(len(idx))
    got, ref = np.concatenate(got), np.concatenate(ref)
    diff = np.abs(got.reshape(n, -1) - np.asarray(ref, dtype=np.int64).reshape(n, -1))
    return RtlCheck(reference, n, float(np.mean(diff.max(axis=1) == 0)), int(diff.max()), round(t_emu, 4), round(t_ref, 3))


def rtl_package(
    package_dir,
    clock_ns: float = 5.0,
    latency_cutoff: float | None = None,
    board: str | None = None,
    check_samples: int = 10000,
    jobs: int = 1,
    vhdl: bool = True,
    log=print,
    progress=None,
) -> dict:
    """`progress` (a lepton_hls.progress.Progress): numbered steps and the check's progress bar."""
    root = Path(package_dir)
    step = progress.step if progress else (lambda *_a, **_k: contextlib.nullcontext())
    if not root.is_dir():
        raise ManifestError(f"{root} is not a package directory (run `lepton-hls build MODEL --out {root}` first)")
    manifest = load_manifest(root) if (root / MANIFEST_NAME).is_file() else None
    if board is None:
        board = (manifest.hls.board if manifest and manifest.hls.board in boards.names() else None) or boards.DEFAULT
    if not solver_is_cached():
        log("rtl: the first trace in this environment compiles da4ml's matrix solver (about 3 minutes on 2 cores, "
            "once; `python -m lepton_hls.rtl.warmup` does it ahead)")
    t0 = time.perf_counter()
    with step("trace the package's engine graph into logic"):
        traced = trace(load_engine_ir(root / "engine"))
    t_trace = time.perf_counter() - t0
    if traced.uncovered:
        log(f"rtl: the RTL ends at layer {traced.output_layer}; not covered: {', '.join(traced.uncovered)}")
    log(f"rtl: traced in {t_trace:.1f} s; building the Verilator emulator (this takes a while for large models)")
    report: RtlReport = build_rtl(traced, root / RTL_DIR, clock_ns=clock_ns, latency_cutoff=latency_cutoff,
                                  board=board, jobs=jobs, vhdl=vhdl, trace_s=t_trace, progress=progress)
    emu = RtlEmulator(root)
    check = None
    if check_samples:
        with step(f"compare the Verilator emulation with the C simulation on {check_samples} inputs"):
            check = check_against_csim(root, emu, n=check_samples, progress=progress)
    result = {
        "tool": "da4ml + verilator",
        "latency_cycles": report.latency_cycles,
        "initiation_interval": report.initiation_interval,
        "clock_ns": report.clock_ns,
        "latency_ns": report.latency_ns,
        "lut_estimate": report.lut_estimate,
        "ff_estimate": report.ff_estimate,
        "dsp_estimate": report.dsp_estimate,
        "board": report.board,
        "fits_board": report.fits_board,
        "output_layer": report.output_layer,
        "uncovered_layers": report.uncovered_layers,
        "verilator_build_s": report.verilator_build_s,
        "trace_s": report.trace_s,
        "check": None if check is None else check.__dict__,
        "bit_exact": None if check is None else check.max_abs_raw_diff == 0,
    }
    if manifest is None:
        write_json(root / REPORT, result)
    else:
        # A rebuild replaces rtl/ wholesale (the emulator library's name changes): the old entries go.
        files = [p for p in (root / RTL_DIR).rglob("*")
                 if p.is_file() and not {"obj_dir", "cocotb_build"} & set(p.parts)]
        record_report(root, manifest, "rtl", result, report_file=REPORT, files=files, replace_prefix=RTL_DIR)
    if check is not None and check.max_abs_raw_diff != 0:
        raise RtlMismatchError(
            f"{root}: Verilator emulation differs from {check.reference} on {100 * (1 - check.identical_rows):.2f}% of "
            f"{check.samples} inputs (max raw difference {check.max_abs_raw_diff}); see {root / REPORT}"
        )
    return result
