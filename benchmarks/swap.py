"""Model swap benchmark: an edge node serving a model repository on the emulated board swaps its model under a
closed-loop load, through `lepton-hls push`. One run pushes --idle-repeats versions with no load (what the swap
costs by itself), then measures the steady state under load, then --repeats pushes while the load keeps running.
Pushes alternate two signed packages of one contract (versions 2, 3, 4, ... = B, A, B, ...).

    python benchmarks/swap.py [--packages out/bench/swap-packages] [--target emulated-board|emulator]

Reports: push to serving (from starting the push to the push returning, which is when the node serves the new
version) and to the first answer labelled with the new version; requests failed; latency p50/p99/max and
throughput in the steady state and during each swap window (push start to push return + 1 s); and every answer
checked bit for bit against the emulation (EmulatorBackend) of the version that says it answered. The node runs
as `lepton-hls serve --repository REPO --trusted-keys KEYS --token T` configures it, on a server thread of this
process; the load comes from client threads of the same process. The packages (two tiny QKeras 16-8-4 MLPs,
tests/lifecycle_models.py, seeds 1 and 2) are built with `lepton-hls build` when missing. Writes
benchmarks/results/swap.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_PACKAGES = ROOT / "out" / "bench" / "swap-packages"
TOKEN = "swap-benchmark-token"
SEEDS = {"a": 1, "b": 2}  # the tiny MLP's weights per package: two versions that answer differently
SWAP_TAIL_S = 1.0  # the swap window runs from push start to push return + this
INPUT_POOL = 512  # distinct batch-1 inputs the clients cycle through


def build_packages(root: Path) -> dict[str, Path]:
    """root/a and root/b (built with `lepton-hls build` from the tiny MLP when missing)."""
    out = {}
    for name, seed in SEEDS.items():
        pkg = root / name
        out[name] = pkg
        if (pkg / "manifest.json").is_file():
            continue
        print(f"building {pkg} (tiny MLP, seed {seed}) ...", flush=True)
        h5 = root / "models" / name / "tiny_mlp.h5"  # the file's stem is the model's name on the node
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        for cmd in ([sys.executable, "-c",
                     "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                     "from lifecycle_models import save_tiny_mlp; save_tiny_mlp(Path(sys.argv[2]), int(sys.argv[3]))",
                     str(ROOT / "tests"), str(h5), str(seed)],
                    [sys.executable, "-m", "lepton_hls.cli", "build", str(h5), "--out", str(pkg), "--force"]):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(f"building {pkg} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return out


@dataclass
class Record:
    sent: float  # monotonic
    done: float
    status: int  # HTTP status; 0 when no response came back
    idx: int  # which input of the pool
    version: str = ""
    y: np.ndarray | None = None
    error: str = ""


class Load:
    """Closed loop: each client thread sends a batch-1 request as soon as its last one is answered."""

    def __init__(self, url: str, model: str, in_name: str, pool: np.ndarray, clients: int):
        self.url = f"{url}/v2/models/{model}/infer"
        self.in_name, self.pool = in_name, pool
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k, clients), daemon=True) for k in range(clients)]

    def _run(self, k: int, clients: int) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {TOKEN}"}
        i = k
        with httpx.Client(timeout=30.0) as client:
            while not self._stop.is_set():
                idx = i % len(self.pool)
                i += clients
                x = self.pool[idx:idx + 1]
                body = {"inputs": [{"name": self.in_name, "shape": list(x.shape), "datatype": "FP64",
                                    "data": x.ravel().tolist()}]}
                t0 = time.monotonic()
                try:
                    r = client.post(self.url, json=body, headers=headers)
                    rec = Record(t0, time.monotonic(), r.status_code, idx)
                    doc = r.json()
                    if r.status_code == 200:
                        out = doc["outputs"][0]
                        rec.version = str(doc.get("model_version", ""))
                        rec.y = np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])[0]
                    else:
                        rec.error = str(doc.get("error", r.text))[:300]
                except Exception as e:  # a failed request, whatever the cause
                    rec = Record(t0, time.monotonic(), 0, idx, error=f"{type(e).__name__}: {e}"[:300])
                with self._lock:
                    self.records.append(rec)

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Record]:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        return self.records


def push(url: str, pkg: Path) -> tuple[int, str]:
    """`lepton-hls push PKG --to URL` in this process; -> (exit code, what it printed)."""
    from lepton_hls.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(["push", str(pkg), "--to", url, "--token", TOKEN])
    return rc, (out.getvalue() + err.getvalue()).strip()


def one_swap(url: str, node, model: str, signed: dict, version_pkg: dict, i: int, n: int, label: str = "") -> dict:
    """Push the next version (B, A, B, ... by its number); -> its timings."""
    version = str(len(version_pkg) + 1)
    which = "b" if len(version_pkg) % 2 == 1 else "a"
    t0, wall0 = time.monotonic(), time.time()
    rc, said = push(url, signed[which])
    t1 = time.monotonic()
    version_pkg[version] = which
    events = [e for e in node.models[model].events if e["version"] == int(version)]
    serving_at = next((e["time"] - wall0 for e in events if e["event"] == "serving"), None)
    print(f"  {label}push {i + 1}/{n}: version {version} ({which}) rc {rc} in {t1 - t0:.2f} s: "
          f"{said.splitlines()[-1] if said else ''}", flush=True)
    return {"version": version, "package": which, "rc": rc, "push_said": said, "t0": t0, "t1": t1,
            "push_to_serving_s": t1 - t0, "node_switched_s": serving_at}


def window_stats(records: list[Record], start: float, end: float) -> dict:
    """Requests answered (200) with their answer arriving in [start, end): latency and throughput."""
    done = [r for r in records if start <= r.done < end]
    ok = [r for r in done if r.status == 200]
    lat = np.asarray([r.done - r.sent for r in ok]) * 1e3
    q = (lambda p: float(np.percentile(lat, p))) if lat.size else (lambda p: float("nan"))
    return {"seconds": end - start, "answered": len(ok), "failed": len(done) - len(ok),
            "p50_ms": q(50), "p99_ms": q(99), "max_ms": float(lat.max()) if lat.size else float("nan"),
            "req_per_s": len(ok) / (end - start) if end > start else float("nan")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packages", default=str(DEFAULT_PACKAGES),
                    help="folder with packages a/ and b/ (built there when missing)")
    ap.add_argument("--target", default="emulated-board", choices=["emulated-board", "emulator"])
    ap.add_argument("--clients", type=int, default=4, help="closed-loop client threads (batch-1 requests)")
    ap.add_argument("--steady-s", type=float, default=10.0, help="steady-state window")
    ap.add_argument("--repeats", type=int, default=10, help="swaps (pushes alternating B, A, B, ...)")
    ap.add_argument("--idle-repeats", type=int, default=3, help="swaps before the load starts (no load)")
    ap.add_argument("--after-s", type=float, default=3.0, help="load kept running after each push returns")
    ap.add_argument("--out", default=str(RESULTS / "swap.json"))
    args = ap.parse_args(argv)

    from lepton_host.backends import EmulatorBackend
    from lepton_host.manifest import load_manifest
    from lepton_host.serving.runner import ServerThread
    from lepton_host.signing import generate_key, sign_package
    from lepton_hls.cli import build_parser
    from lepton_hls.commands.serve import build_node

    pkgs = build_packages(Path(args.packages))
    manifest = load_manifest(pkgs["a"])
    model, in_name, n_in = manifest.model.name, manifest.input.name, manifest.input.size
    if load_manifest(pkgs["b"]).model.name != model:
        raise SystemExit(f"{pkgs['a']} and {pkgs['b']} are packages of different models")
    pool = np.random.default_rng(0).uniform(-3, 3, size=(INPUT_POOL, n_in))
    refs = {k: EmulatorBackend(p).predict(pool) for k, p in pkgs.items()}
    if np.array_equal(refs["a"], refs["b"]):
        raise SystemExit("packages a and b answer alike on the inputs: a swap could not be seen in the answers")

    (ROOT / "out" / "bench").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="swap-", dir=ROOT / "out" / "bench"))
    server = None
    load = None
    try:
        key, _ = generate_key(work / "keys", "bench")
        signed = {}
        for k, p in pkgs.items():
            signed[k] = work / "signed" / k
            shutil.copytree(p, signed[k])
            sign_package(signed[k], key)
        repo = work / "repo"
        shutil.copytree(signed["a"], repo / model / "1")
        version_pkg = {"1": "a"}

        serve_args = build_parser().parse_args(["serve", "--repository", str(repo), "--trusted-keys",
                                                str(work / "keys"), "--target", args.target, "--token", TOKEN])
        app, node = build_node(serve_args)
        t = time.monotonic()
        server = ServerThread(app).start()
        node_start_s = time.monotonic() - t
        url = server.url
        print(f"node on {url} ({args.target}, started in {node_start_s:.2f} s); {args.clients} clients, "
              f"steady {args.steady_s:g} s, then {args.repeats} swaps", flush=True)
        load_before = os.getloadavg()
        # The same swap with no load: what the swap itself costs on this machine.
        idle = [one_swap(url, node, model, signed, version_pkg, i, args.idle_repeats, "idle ")
                for i in range(args.idle_repeats)]

        load = Load(url, model, in_name, pool, args.clients).start()
        time.sleep(1.0)  # connections opened, first requests through: not counted
        steady = (time.monotonic(), time.monotonic() + args.steady_s)
        time.sleep(args.steady_s)

        swaps = []
        for i in range(args.repeats):
            swaps.append(one_swap(url, node, model, signed, version_pkg, i, args.repeats))
            time.sleep(args.after_s)
        records = load.stop()
        load = None
        load_after = os.getloadavg()
    finally:
        if load is not None:
            load.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    # ---- every answer against the emulation of the version that says it answered -----------------------
    mismatches, unknown = 0, 0
    for r in records:
        if r.status != 200:
            continue
        which = version_pkg.get(r.version)
        if which is None:
            unknown += 1
        elif not np.array_equal(r.y, refs[which][r.idx]):
            mismatches += 1

    for s in swaps:
        new = [r for r in records if r.status == 200 and r.version == s["version"]]
        s["first_new_answer_s"] = (min(r.done for r in new) - s["t0"]) if new else None
        # Requests sent after the push returned must all be answered by the new version (or a later one).
        s["old_after_return"] = sum(1 for r in records if r.status == 200 and r.sent >= s["t1"]
                                    and int(r.version) < int(s["version"]))
        s["window"] = window_stats(records, s["t0"], s["t1"] + SWAP_TAIL_S)

    steady_stats = window_stats(records, *steady)
    windows = [(s["t0"], s["t1"] + SWAP_TAIL_S) for s in swaps]
    in_swap = [r for r in records if any(a <= r.done < b for a, b in windows)]
    swap_stats = window_stats(in_swap, min(a for a, _ in windows), max(b for _, b in windows)) if swaps else {}
    if swaps:  # the union of the swap windows, not the span from the first to the last
        seconds = sum(b - a for a, b in windows)
        swap_stats["seconds"] = seconds
        swap_stats["req_per_s"] = swap_stats["answered"] / seconds
    failed = [r for r in records if r.status != 200]
    p2s = [s["push_to_serving_s"] for s in swaps if s["rc"] == 0]
    first = [s["first_new_answer_s"] for s in swaps if s["first_new_answer_s"] is not None]
    total = {"requests": len(records), "answered": len(records) - len(failed), "failed": len(failed),
             "mismatches": mismatches, "unknown_version": unknown,
             "pushes_ok": sum(s["rc"] == 0 for s in swaps), "pushes": len(swaps),
             "old_version_after_push_return": sum(s["old_after_return"] for s in swaps),
             "push_to_serving_mean_s": float(np.mean(p2s)) if p2s else None,
             "push_to_serving_max_s": float(np.max(p2s)) if p2s else None,
             "first_new_answer_mean_s": float(np.mean(first)) if first else None}
    idle_p2s = [s["push_to_serving_s"] for s in idle if s["rc"] == 0]
    total["idle_pushes_ok"], total["idle_pushes"] = len(idle_p2s), len(idle)
    total["idle_push_to_serving_mean_s"] = float(np.mean(idle_p2s)) if idle_p2s else None

    # ---- report -----------------------------------------------------------------------------------------
    print(f"\n{'swap':>4} {'version':>7} {'push to serving s':>17} {'first new answer s':>18} "
          f"{'answered':>8} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for i, s in enumerate(swaps, 1):
        w = s["window"]
        fa = "-" if s["first_new_answer_s"] is None else f"{s['first_new_answer_s']:.3f}"
        print(f"{i:4d} {s['version'] + ' (' + s['package'] + ')':>7} {s['push_to_serving_s']:17.3f} {fa:>18} "
              f"{w['answered']:8d} {w['failed']:6d} {w['p50_ms']:7.2f} {w['p99_ms']:7.2f} {w['max_ms']:7.1f}")
    print(f"\n{'window':22} {'seconds':>7} {'answered':>8} {'failed':>6} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7}")
    for label, w in (("steady state", steady_stats), ("during swaps", swap_stats)):
        if w:
            print(f"{label:22} {w['seconds']:7.2f} {w['answered']:8d} {w['failed']:6d} {w['req_per_s']:7.1f} "
                  f"{w['p50_ms']:7.2f} {w['p99_ms']:7.2f} {w['max_ms']:7.1f}")
    switched = [s["node_switched_s"] for s in swaps if s["node_switched_s"] is not None]
    if switched:
        print(f"\nthe node's own 'serving' event came {np.mean(switched):.3f} s after push start (mean); the push "
              f"returned {np.mean(p2s) - np.mean(switched):.3f} s later (under load)")
    if idle_p2s:
        print(f"push to serving with no load: mean {np.mean(idle_p2s):.3f} s over {len(idle_p2s)} pushes; under "
              f"load: mean {np.mean(p2s) if p2s else float('nan'):.3f} s, max {max(p2s, default=float('nan')):.3f} s")
    print(f"total: {total}")
    for s in idle + swaps:
        if s["rc"] != 0:
            print(f"  push of version {s['version']} failed: {s['push_said']}")
    for e in sorted({r.error for r in failed})[:5]:
        print(f"  failed request: {e}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": model, "packages": {k: str(p) for k, p in pkgs.items()}, "target": args.target,
        "clients": args.clients, "steady_s": args.steady_s, "repeats": args.repeats, "idle_repeats": args.idle_repeats, "after_s": args.after_s,
        "swap_tail_s": SWAP_TAIL_S, "node_start_s": node_start_s,
        "steady": steady_stats, "swap": swap_stats,
        "idle_swaps": [{k: v for k, v in s.items() if k not in ("t0", "t1")} for s in idle],
        "swaps": [{k: v for k, v in s.items() if k not in ("t0", "t1")} for s in swaps], "total": total,
        "machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "loadavg_before": load_before, "loadavg_after": load_after,
    }, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if total["failed"] == 0 and total["mismatches"] == 0 and total["pushes_ok"] == len(swaps) \
        and len(idle_p2s) == len(idle) else 1


if __name__ == "__main__":
    sys.exit(main())
