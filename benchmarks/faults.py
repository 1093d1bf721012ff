"""Fault benchmark: the edge gateway on the emulated board, under a bounded mixed load, through a schedule of
every board fault kind (hang, short, corrupt with masks in data lanes, slow, missing) and of the cloud stopped
(SIGSTOP/SIGCONT) and killed (and restarted). Every 200 answer is compared with the bit-exact reference: the
package's fast engine for rows the edge answered, the package's (Q)Keras model in TensorFlow (what the cloud
server computes) for rows the cloud answered.

    python benchmarks/faults.py [--package out/bench/jet]

Per phase: requests sent, answered, lost (no 200), WRONG (a 200 whose rows match neither reference), latency
p50/p99, and the recovery time after the fault clears (until the recovered path answers again). Builds the
package with `lepton-hls build jet_tagger` when it is missing. Servers run in their own processes on 127.0.0.1;
the whole run takes about two minutes. Writes benchmarks/results/faults.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_PACKAGE = ROOT / "out" / "bench" / "jet"
FAULT_S = 2.0  # each board fault lasts this long...
PHASE_S = 4.0  # ...in a phase this long (the rest shows the recovery)
BASELINE_S = 3.0
BOARD_FAULTS = [
    ("hang", "hang"),
    ("short", "short:keep_fraction=0.5"),
    ("corrupt 0x80008000", "corrupt:mask=0x80008000"),
    ("corrupt 0x1", "corrupt:mask=0x1"),
    ("corrupt 0x100", "corrupt:mask=0x100"),
    ("corrupt 0x8000", "corrupt:mask=0x8000"),
    ("corrupt 0x10000", "corrupt:mask=0x10000"),
    ("slow 0.2 s", "slow:delay_s=0.2"),
    ("missing", "missing"),
]
CLOUD_STOP_S = 3.0
WORKERS = 4
PAUSE_S = 0.01  # per worker between requests: a bounded load
GOAL_RECOVERY_S = 2.0
POLL_S = 0.03  # how often the gateway's /metrics are read for fault transitions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lepton_hls.cli", *args], stdout=open(log, "a"),
                            stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 180.0) -> float:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not become ready within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass
class Record:
    sent: float  # monotonic
    done: float
    n: int
    status: int
    kind: str  # in | mixed | out
    x: np.ndarray
    y: np.ndarray | None = None
    params: dict = field(default_factory=dict)
    error: str = ""


def make_inputs(rng: np.random.Generator, n: int, kind: str, lo: float, hi: float, n_in: int) -> np.ndarray:
    x = np.clip(rng.normal(0.0, 3.0, (n, n_in)), lo + 0.5, hi - 0.5)
    if kind == "out":
        x[:, rng.integers(n_in)] = rng.choice([-1, 1]) * rng.uniform(hi * 1.5, hi * 4)
    elif kind == "mixed":
        rows = rng.random(n) < 0.3
        rows[rng.integers(n)] = True
        x[rows, 0] = hi * 2.5
    return x.astype(np.float32)


async def load(url: str, name: str, in_name: str, n_in: int, lo: float, hi: float, until: float,
               records: list[Record], seed: int) -> None:
    import httpx

    rng = np.random.default_rng(seed)
    async with httpx.AsyncClient(timeout=15.0) as client:
        while time.monotonic() < until:
            n = int(rng.integers(1, 65))
            kind = rng.choice(["in", "in", "in", "in", "mixed", "out"])
            x = make_inputs(rng, n, kind, lo, hi, n_in)
            body = {"inputs": [{"name": in_name, "shape": list(x.shape), "datatype": "FP32",
                                "data": x.ravel().tolist()}]}
            t0 = time.monotonic()
            try:
                r = await client.post(f"{url}/v2/models/{name}/infer", json=body)
                rec = Record(t0, time.monotonic(), n, r.status_code, kind, x)
                msg = r.json()
                if r.status_code == 200:
                    out = msg["outputs"][0]
                    rec.y = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
                    rec.params = msg.get("parameters", {})
                else:
                    rec.error = str(msg.get("error", ""))[:300]
            except Exception as e:  # a lost request, whatever the cause
                rec = Record(t0, time.monotonic(), n, 0, kind, x, error=f"{type(e).__name__}: {e}"[:300])
            records.append(rec)
            await asyncio.sleep(PAUSE_S)


async def watch(url: str, until: float, events: list) -> None:
    """Fault transitions as the gateway reports them (its /metrics), with the time they were seen."""
    import httpx

    seen: dict[str, float] = {}
    pat = re.compile(r'lepton_gateway_fault_injected\{kind="(\w+)"\} ([0-9.]+)')
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < until:
            try:
                text = (await client.get(url + "/metrics")).text
                now = time.monotonic()
                for kind, value in pat.findall(text):
                    v = float(value)
                    if seen.get(kind, 0.0) != v:
                        events.append((now, kind, "inject" if v else "clear"))
                        seen[kind] = v
            except Exception:
                pass
            await asyncio.sleep(POLL_S)


async def cloud_actions(actions: list, t0: float, procs: dict, log: dict) -> None:
    """Stop the cloud with SIGSTOP, continue it, kill it and start it again, at their times."""
    for at, what in actions:
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        proc = procs["cloud"]
        if what == "stop":
            os.kill(proc.pid, signal.SIGSTOP)
        elif what == "cont":
            os.kill(proc.pid, signal.SIGCONT)
        elif what == "kill":
            proc.kill()
            proc.wait()
        elif what == "restart":
            procs["cloud"] = cli("cloud", procs["package"], "--port", str(procs["cloud_port"]), log=procs["log"])
            await asyncio.to_thread(wait_ready, procs["cloud_url"], procs["cloud"])
            log["cloud_back"] = time.monotonic()
        log[what] = time.monotonic()


def pct(v) -> tuple[float, float]:
    a = np.asarray(v, dtype=float) * 1e3
    return (float(np.percentile(a, 50)), float(np.percentile(a, 99))) if a.size else (float("nan"),) * 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", default=str(DEFAULT_PACKAGE))
    ap.add_argument("--out", default=str(RESULTS / "faults.json"))
    args = ap.parse_args(argv)
    pkg = Path(args.package)
    logs = ROOT / "out" / "bench" / "faults-logs"
    logs.mkdir(parents=True, exist_ok=True)
    if not (pkg / "manifest.json").is_file():
        print(f"building {pkg} ...", flush=True)
        subprocess.run([sys.executable, "-m", "lepton_hls.cli", "build", "jet_tagger", "--out", str(pkg)],
                       check=True, stdout=subprocess.DEVNULL)

    from lepton_host.manifest import load_manifest
    from lepton_host.serving.audit import make_reference, mismatching_rows

    m = load_manifest(pkg)
    name, in_name, n_in = m.model.name, m.input.name, m.input.size
    fmt = m.input.format
    # In-range inputs: preprocessed values the input format holds (identity preprocessing for jet_tagger).
    if m.preprocessing.kind != "identity":
        raise SystemExit("this benchmark draws inputs for identity preprocessing (the zoo's jet_tagger)")
    lo, hi = fmt.min_value, fmt.max_value

    schedule, phases = [], [("baseline", 0.0, BASELINE_S, None)]
    t = BASELINE_S
    for label, spec in BOARD_FAULTS:
        schedule.append(f"{spec}@{t:g}-{t + FAULT_S:g}")
        phases.append((label, t, t + PHASE_S, ("board", spec.split(":")[0], t + FAULT_S)))
        t += PHASE_S
    stop_at = t
    phases.append(("cloud SIGSTOP", stop_at, stop_at + CLOUD_STOP_S + 2.0, ("cloud", "cont", None)))
    kill_at = stop_at + CLOUD_STOP_S + 2.0
    phases.append(("cloud killed+restarted", kill_at, None, ("cloud", "restart", None)))
    cloud_plan = [(stop_at, "stop"), (stop_at + CLOUD_STOP_S, "cont"), (kill_at, "kill"), (kill_at + 1.0, "restart")]

    cloud_port, gw_port = free_port(), free_port()
    cloud_url, gw_url = f"http://127.0.0.1:{cloud_port}", f"http://127.0.0.1:{gw_port}"
    log = logs / "servers.log"
    log.write_text("")
    procs: dict = {"package": str(pkg), "cloud_port": cloud_port, "cloud_url": cloud_url, "log": log}
    gateway = None
    try:
        procs["cloud"] = cli("cloud", str(pkg), "--port", str(cloud_port), log=log)
        wait_ready(cloud_url, procs["cloud"])
        fault_args = [a for s in schedule for a in ("--fault", s)]
        gateway = cli("serve", str(pkg), "--target", "emulated-board", "--engine", "fast", "--port", str(gw_port),
                      "--cloud", cloud_url, "--health-interval-ms", "100", "--breaker-reset-s", "1",
                      "--cloud-timeout-ms", "1000", *fault_args, log=log)
        t0 = wait_ready(gw_url, gateway)
        mono_minus_wall = time.monotonic() - time.time()
        print(f"servers up; load for about {kill_at + 20:.0f} s", flush=True)

        records: list[Record] = []
        events: list = []
        cloud_log: dict = {}

        async def run():
            actions = asyncio.ensure_future(cloud_actions(cloud_plan, t0, procs, cloud_log))
            end_holder = {"until": t0 + kill_at + 60.0}  # bounded; cut short once the cloud is back
            watcher_until = end_holder["until"]
            loads = [asyncio.ensure_future(load(gw_url, name, in_name, n_in, lo, hi, watcher_until, records, k))
                     for k in range(WORKERS)]
            watcher = asyncio.ensure_future(watch(gw_url, watcher_until, events))
            await actions
            await asyncio.sleep(3.0)  # answers after the cloud is back
            for task in loads + [watcher]:
                task.cancel()
            await asyncio.gather(*loads, watcher, return_exceptions=True)

        asyncio.run(run())
        t_end = time.monotonic()
        metrics = __import__("httpx").get(gw_url + "/metrics").text
        found = re.findall(r"lepton_gateway_fault_schedule_start_time_seconds ([0-9.e+]+)", metrics)
        schedule_start = float(found[0]) if found else 0.0
    finally:
        stop(gateway)
        stop(procs.get("cloud"))

    # ---- check every answer ----------------------------------------------------------------------------
    print(f"checking {len(records)} answers ...", flush=True)
    edge_ref = make_reference(pkg, m, "fast")
    from lepton_cloud.server import KerasModel

    keras = KerasModel(pkg, m, "/CPU:0")
    wrong = np.zeros(len(records), dtype=bool)
    answered = [r for r in records if r.status == 200]
    if answered:
        xs = np.concatenate([r.x for r in answered]).astype(np.float64)
        ref_edge = [np.asarray(a, dtype=np.float32) for a in edge_ref(xs)]
        ref_cloud = np.asarray(keras(xs), dtype=np.float32)
        off = 0
        for i, r in enumerate(records):
            if r.status != 200:
                continue
            sl = slice(off, off + r.n)
            off += r.n
            y = r.y.reshape(r.n, -1)
            is_edge = ~mismatching_rows(y, tuple(a[sl] for a in ref_edge))
            is_cloud = np.all(np.abs(y - ref_cloud[sl].reshape(r.n, -1)) <= 1e-5, axis=1)
            served = r.params.get("served_by")
            ok = is_edge if served == "edge" else is_cloud if served == "cloud" else is_edge | is_cloud
            wrong[i] = not ok.all()

    # ---- per phase ---------------------------------------------------------------------------------------
    first_inject = next((t for t, kind, what in events if what == "inject"), None)
    # Phases on the gateway's own schedule clock (its start, in Unix time, from /metrics), so a request sent
    # as a fault began counts in that fault's row; without it, from when the first fault was seen.
    if schedule_start:
        offset = schedule_start + mono_minus_wall - t0
    else:
        offset = (first_inject - (t0 + BASELINE_S)) if first_inject is not None else 0.0
    clears = [(t, kind) for t, kind, what in events if what == "clear"]
    rows = []
    for label, start, end, fault in phases:
        a = t0 + offset + start if fault is None or fault[0] == "board" else t0 + start
        b = (t0 + offset + end) if end is not None else t_end + 1
        if fault is not None and fault[0] == "cloud":
            b = t0 + end if end is not None else t_end + 1
        mine = [(i, r) for i, r in enumerate(records) if a <= r.sent < b]
        lat = [r.done - r.sent for _, r in mine if r.status == 200]
        lost = [r for _, r in mine if r.status != 200]
        p50, p99 = pct(lat)
        rec_s = None
        went_out = None
        if fault is not None:
            if fault[0] == "board":
                want = t0 + offset + fault[2]
                kind = fault[1]
                cl = [t for t, k in clears if k == kind and abs(t - want) < 1.0]
                cleared = want if schedule_start else (cl[0] if cl else want)
                edge_gone = [r for _, r in mine if r.sent < cleared and r.kind == "in" and r.status == 200
                             and r.params.get("served_by") != "edge"]
                went_out = bool(edge_gone)
                back = [r.done for _, r in mine if r.sent >= cleared - 0.05 and r.kind == "in" and r.status == 200
                        and r.params.get("served_by") == "edge"]
                rec_s = max(0.0, min(back) - cleared) if back else None
                if not went_out and back:
                    rec_s = 0.0
            else:
                cleared = cloud_log.get("cont") if fault[1] == "cont" else cloud_log.get("cloud_back")
                back = [r.done for _, r in mine if cleared is not None and r.sent >= cleared and r.kind == "out"
                        and r.status == 200 and r.params.get("served_by") == "cloud"
                        and not r.params.get("degraded")]
                rec_s = max(0.0, min(back) - cleared) if back and cleared is not None else None
                went_out = True
        rows.append({
            "phase": label, "sent": len(mine), "answered": len(mine) - len(lost), "lost": len(lost),
            "wrong": int(sum(wrong[i] for i, _ in mine)), "p50_ms": p50, "p99_ms": p99,
            "recovery_s": rec_s, "path_bypassed": went_out,
            "lost_errors": sorted({r.error for r in lost})[:3],
        })

    audit = {"audited": 0.0, "mismatches": 0.0, "dropped": 0.0} | {
        k: float(v) for k, v in re.findall(r'lepton_gateway_audit_total\{outcome="(\w+)"\} ([0-9.e+]+)', metrics)}
    transitions = {k: float(v) for k, v in
                   re.findall(r'lepton_gateway_edge_transitions_total\{to="(\w+)"\} ([0-9.e+]+)', metrics)}
    total = {"sent": len(records), "answered": sum(r.status == 200 for r in records),
             "lost": sum(r.status != 200 for r in records), "wrong": int(wrong.sum()),
             "rows": int(sum(r.n for r in records))}
    recs = [r["recovery_s"] for r in rows if r["recovery_s"] is not None]
    goal = {"lost_0": total["lost"] == 0, "wrong_0": total["wrong"] == 0,
            "recovery_le_2s": bool(recs) and max(recs) <= GOAL_RECOVERY_S
            and all(r["recovery_s"] is not None for r in rows[1:])}

    print(f"\n{'phase':26} {'sent':>5} {'answered':>8} {'lost':>5} {'WRONG':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'recovery s':>10}")
    for r in rows:
        rec = "-" if r["phase"] == "baseline" else ("missed" if r["recovery_s"] is None else f"{r['recovery_s']:.2f}")
        print(f"{r['phase']:26} {r['sent']:5d} {r['answered']:8d} {r['lost']:5d} {r['wrong']:6d} "
              f"{r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {rec:>10}")
    print(f"{'total':26} {total['sent']:5d} {total['answered']:8d} {total['lost']:5d} {total['wrong']:6d}")
    print(f"audit: {audit}; edge transitions: {transitions}; goal met: {goal}")
    for r in rows:
        if r["lost_errors"]:
            print(f"  lost in {r['phase']}: {r['lost_errors']}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "package": str(pkg), "model": name, "schedule": schedule, "cloud_plan": cloud_plan,
        "workers": WORKERS, "pause_s": PAUSE_S, "phases": rows, "total": total, "audit": audit,
        "edge_transitions": transitions, "goal": goal, "machine": platform.platform(),
        "cpus": os.cpu_count(),
    }, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
