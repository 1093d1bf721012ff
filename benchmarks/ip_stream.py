"""The stream IP on the wire and in C simulation, per package.

For each package: lane widths, 32-bit words per sample in and out, DMA bytes per sample against hls4ml's
VivadoAccelerator float32 stream, the DMA length-register width a batch of 4096 needs, and the wrapper's
C-simulation run (g++ build time, samples checked bit for bit against the core, samples/s of the C model).

    python benchmarks/ip_stream.py PACKAGE_DIR [PACKAGE_DIR ...]

Prints a table and writes benchmarks/results/ip_stream.json. The C-model speed is not a hardware number:
it is how fast the check itself runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lepton_host.manifest import load_manifest
from lepton_hls import ip_wrapper, overlay

RESULTS = Path(__file__).parent / "results" / "ip_stream.json"


def measure(pkg: Path, batch: int = 4096) -> dict:
    manifest = load_manifest(pkg, verify=False)
    spec = ip_wrapper.wrapper_spec(manifest, pkg / "hls")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ip = ip_wrapper.generate_ip(spec, tmp / "ip")
        t0 = time.perf_counter()
        exe = ip_wrapper.build_csim(ip, pkg / "hls", tmp / "tb", project_name=manifest.hls.project_name)
        build_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        fmt = spec.in_format
        raw = rng.integers(fmt.raw_min, fmt.raw_max + 1, size=(batch, spec.n_in), dtype=np.int64)
        words = ip_wrapper.pack_words(raw, spec.in_lane)
        (tmp / "in.txt").write_text(f"batch {len(words)}\n" + "\n".join(f"{int(w):08x}" for w in words) + "\n")
        t0 = time.perf_counter()
        proc = subprocess.run([str(exe), str(tmp / "in.txt"), str(tmp / "out.txt")], capture_output=True, text=True)
        run_s = time.perf_counter() - t0
    in_words_per_sample = spec.n_in * spec.in_lane / 32
    out_words_per_sample = spec.n_out * spec.out_lane / 32
    packed_bytes = 4 * (in_words_per_sample + out_words_per_sample)
    float_bytes = 4 * (spec.n_in + spec.n_out)  # hls4ml VivadoAccelerator: one float32 per value
    return {
        "package": pkg.name,
        "model": manifest.model.name,
        "inputs": spec.n_in,
        "outputs": spec.n_out,
        "in_format": str(spec.in_format),
        "out_format": str(spec.out_format),
        "in_lane_bits": spec.in_lane,
        "out_lane_bits": spec.out_lane,
        "in_words_per_sample": in_words_per_sample,
        "out_words_per_sample": out_words_per_sample,
        "dma_bytes_per_sample": packed_bytes,
        "float32_bytes_per_sample": float_bytes,
        "dma_length_bits_for_4096": overlay.dma_length_width(4 * max(spec.in_words(4096), spec.out_words(4096))),
        "csim_build_s": round(build_s, 2),
        "csim_batch": batch,
        "csim_ok": proc.returncode == 0,
        "csim_summary": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-200:],
        "csim_samples_per_s": round(batch / run_s),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("packages", nargs="+", type=Path)
    args = ap.parse_args(argv)
    rows = [measure(p) for p in args.packages]
    print(f"{'model':<12} {'in':>4} {'out':>4} {'lanes':>7} {'words in/out':>13} {'bytes/sample':>13} "
          f"{'float32':>8} {'len bits':>8} {'g++ s':>6} {'csim':>5} {'C model/s':>10}")
    for r in rows:
        print(f"{r['model']:<12} {r['inputs']:>4} {r['outputs']:>4} {r['in_lane_bits']:>3}/{r['out_lane_bits']:<3} "
              f"{r['in_words_per_sample']:>6g}/{r['out_words_per_sample']:<6g} {r['dma_bytes_per_sample']:>13g} "
              f"{r['float32_bytes_per_sample']:>8} {r['dma_length_bits_for_4096']:>8} {r['csim_build_s']:>6} "
              f"{'ok' if r['csim_ok'] else 'FAIL':>5} {r['csim_samples_per_s']:>10}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0 if all(r["csim_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
