"""Triton's statistics extension for one model: request counts and cumulative durations, as
`GET /v2/models[/{m}[/versions/{v}]]/stats` returns them (Triton's schema, which perf_analyzer reads).

`success`/`fail`: inference requests and their whole time in the server; `queue`: time a request waited in
the edge's batching queue; `compute_infer`: the backend call that answered it (a request in a batch counts the
batch's call, as Triton counts it); `inference_count`: samples answered, `execution_count`: backend calls;
`batch_stats`: backend calls by batch size. Input and output conversion happen inside the request's time and are
not measured apart (counted, with zero time), and there is no response cache (zero hits and misses).
"""

from __future__ import annotations

import time


class Duration:
    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def to_dict(self) -> dict:
        return {"count": self.count, "ns": self.ns}


STAGES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


class ModelStatistics:
    """Updated on the server's event loop only (no lock)."""

    def __init__(self) -> None:
        self.stages = {s: Duration() for s in STAGES}
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.batches: dict[int, Duration] = {}

    def request_done(self, ok: bool, samples: int, seconds: float) -> None:
        self.stages["success" if ok else "fail"].add(seconds)
        if ok:
            self.inference_count += samples
            self.last_inference_ms = int(time.time() * 1e3)

    def batched(self, queue_s: float, compute_s: float) -> None:
        """One request's share of the edge: its wait in the queue and the call that answered it."""
        self.stages["queue"].add(queue_s)
        self.stages["compute_infer"].add(compute_s)
        # Counted with no time of their own: perf_analyzer requires the three compute counts to agree.
        self.stages["compute_input"].add(0.0)
        self.stages["compute_output"].add(0.0)

    def executed(self, batch_size: int, compute_s: float) -> None:
        self.execution_count += 1
        d = self.batches.get(batch_size)
        if d is None:
            d = self.batches[batch_size] = Duration()
        d.add(compute_s)

    def to_triton(self, name: str, version: str) -> dict:
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {s: d.to_dict() for s, d in self.stages.items()},
            "batch_stats": [{"batch_size": b, "compute_input": {"count": d.count, "ns": 0},
                             "compute_infer": d.to_dict(), "compute_output": {"count": d.count, "ns": 0}}
                            for b, d in sorted(self.batches.items())],
            "memory_usage": [],
        }
