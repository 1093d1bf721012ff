"""Replaying labelled held-out data through a serving gateway, one sample per request, and accounting for it:
which path answered each sample and why, how long the request took at the client, and whether the answer was
right. What `calibrate` predicts is checked against this."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import numpy as np

from lepton_host.serving import oip


@dataclass
class Replay:
    served_by: np.ndarray  # "edge" | "cloud" per sample
    reasons: np.ndarray  # the gateway's route_reason per sample
    latency_s: np.ndarray  # per request, at the client
    correct: np.ndarray  # the answer's argmax equals the label (classifiers)

    @property
    def n(self) -> int:
        return int(self.served_by.size)

    def accuracy(self) -> float:
        return float(self.correct.mean())

    def offload_fraction(self) -> float:
        return float((self.served_by == "cloud").mean())

    def latency_by_path(self) -> dict:
        out = {}
        for path in ("edge", "cloud"):
            v = self.latency_s[self.served_by == path] * 1e3
            out[path] = ({"n": int(v.size), "mean_ms": float(v.mean()), "p50_ms": float(np.percentile(v, 50)),
                          "p99_ms": float(np.percentile(v, 99))} if v.size else {"n": 0})
        return out

    def reason_counts(self) -> dict:
        labels, counts = np.unique(self.reasons.astype(str), return_counts=True)
        return {str(k): int(v) for k, v in zip(labels, counts)}


def replay(url: str, model: str, input_name: str, x: np.ndarray, labels: np.ndarray | None = None,
           headers: dict | None = None, timeout_s: float = 30.0) -> Replay:
    """One request per sample, in order, waiting for each answer (the latency a lone caller sees)."""
    n = x.shape[0]
    served = np.empty(n, dtype=object)
    reasons = np.empty(n, dtype=object)
    latency = np.empty(n)
    answers = []
    with httpx.Client(timeout=timeout_s, headers=headers) as client:
        for i in range(n):
            body, hdrs = oip.encode_infer_request([oip.Tensor(input_name, "FP32", x[i:i + 1].astype(np.float32))])
            t0 = time.perf_counter()
            r = client.post(f"{url}/v2/models/{model}/infer", content=body, headers=hdrs)
            latency[i] = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"sample {i}: the gateway answered {r.status_code}: "
                                   f"{oip.error_message(r.content, r.reason_phrase)}")
            resp = oip.decode_infer_response(r.content, r.headers.get(oip.HEADER_LENGTH))
            served[i] = resp.parameters.get("served_by", "")
            reasons[i] = resp.parameters.get("route_reason", "")
            answers.append(np.asarray(next(iter(resp.outputs.values()))).reshape(-1))
    y = np.stack(answers)
    correct = (y.argmax(axis=1) == labels) if labels is not None else np.zeros(n, bool)
    return Replay(served, reasons, latency, correct)
