"""Calibrating a package's cascade on labelled held-out data: the bit-exact edge and the cloud model answer
every sample, each escalation criterion's frontier is computed (cascade_frontier.py), the point the target asks
for is chosen, and the edge and cloud latencies are measured for the latency model (cascade_latency.py).

The edge is the package's own fast engine (bit for bit the accelerator's answers); the cloud is an OIP server
(any: `lepton-hls cloud`, Triton, KServe) or a Keras model loaded here. Both take the same raw features.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lepton_host.manifest import Manifest
from lepton_host.serving.cascade_criteria import CRITERIA, criteria_for, criterion as named_criterion
from lepton_host.serving.routing import Router, RoutingPolicy

from .cascade_frontier import CalibrationError, Frontier, OperatingPoint, Target, choose, frontier
from .cascade_latency import LatencyModel, LatencyPrediction

LATENCY_SAMPLES = 200  # batch-1 calls per path for the latency model
CLOUD_BATCH = 64


@dataclass
class HeldOut:
    x: np.ndarray  # raw features, (n, *input shape)
    y: np.ndarray  # labels: class index (classifier) or 0 normal / 1 anomalous (autoencoder)
    source: str


def load_heldout(spec: str, manifest: Manifest) -> HeldOut:
    """`zoo:NAME` (the zoo model's held-out split) or an `.npz` holding `x` (raw features) and `y` (labels:
    class indices or class names for a classifier, 0/1 for an autoencoder)."""
    if spec.startswith("zoo:"):
        from . import zoo

        data = zoo.get(spec[4:]).eval_data()
        if data is None:
            raise CalibrationError(f"{spec}: this zoo model ships no labelled data")
        x, y = data
    else:
        path = Path(spec)
        if not path.is_file():
            raise CalibrationError(f"held-out data {spec}: no such file (give an .npz with x and y, or zoo:NAME)")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files or "y" not in z.files:
                    raise CalibrationError(f"{spec}: needs arrays 'x' (raw features) and 'y' (labels); "
                                           f"it holds {sorted(z.files)}")
                x, y = z["x"], z["y"]
        except (ValueError, OSError) as e:
            raise CalibrationError(f"{spec}: not a readable .npz file ({e})") from None
    x = np.asarray(x, dtype=np.float64)
    shape = tuple(manifest.input.shape)
    if x.ndim == 2 and x.shape[1:] != shape and x.shape[1] == int(np.prod(shape)):
        x = x.reshape((-1, *shape))  # flat rows, as a table export has them
    if x.shape[1:] != shape:
        raise CalibrationError(f"{spec}: samples of shape {x.shape[1:]}, the package's input is {shape}")
    y = _labels(np.asarray(y), manifest, spec)
    if y.shape[0] != x.shape[0]:
        raise CalibrationError(f"{spec}: {x.shape[0]} samples but {y.shape[0]} labels")
    if x.shape[0] < 2:
        raise CalibrationError(f"{spec}: {x.shape[0]} sample(s); calibration needs held-out data, hundreds ideally")
    if not np.isfinite(x).all():
        raise CalibrationError(f"{spec}: x holds NaN or infinite values")
    return HeldOut(x, y, spec)


def _labels(y: np.ndarray, manifest: Manifest, spec: str) -> np.ndarray:
    y = y.reshape(-1) if y.ndim > 1 and y.shape[1:] == (1,) else y
    if y.ndim != 1:
        raise CalibrationError(f"{spec}: labels must be one per sample (shape (n,)), got {y.shape}")
    if manifest.model.task == "autoencoder":
        if not np.isin(y, (0, 1)).all():
            raise CalibrationError(f"{spec}: autoencoder labels are 0 (normal) or 1 (anomalous)")
        return y.astype(np.int64)
    classes = list(manifest.model.classes)
    k = int(np.prod(manifest.output.shape))
    if y.dtype.kind in "US":
        unknown = sorted(set(y.tolist()) - set(classes))
        if unknown:
            raise CalibrationError(f"{spec}: labels {unknown[:5]} are not among the model's classes {classes}")
        return np.array([classes.index(v) for v in y.tolist()], dtype=np.int64)
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        raise CalibrationError(f"{spec}: classifier labels must be class indices or names, got fractions")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= k):
        raise CalibrationError(f"{spec}: class indices must be in 0..{k - 1}, got {y.min()}..{y.max()}")
    return y


# ---- the two paths ----------------------------------------------------------------------------------------

class CloudPath:
    """The cloud model as a batch function on raw features, and its batch-1 latency."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], describe: str, close=None):
        self.predict = predict
        self.describe = describe
        self._close = close

    def close(self) -> None:
        if self._close is not None:
            self._close()


def oip_cloud(url: str, model: str, input_name: str, output_name: str = "", token: str | None = None,
              timeout_s: float = 30.0) -> CloudPath:
    """An OIP server as the cloud path (synchronous; binary tensors when the server lists them)."""
    import httpx

    from lepton_host.serving import oip
    from lepton_host.serving.cloud_client import redact_url, split_userinfo

    base, auth = split_userinfo(url)
    base = base.rstrip("/")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(timeout=timeout_s, auth=auth, headers=headers)
    where = redact_url(url)
    try:
        meta = client.get(f"{base}/v2")
        binary = meta.status_code == 200 and "binary_tensor_data" in (meta.json().get("extensions") or [])
    except (httpx.HTTPError, ValueError) as e:
        client.close()
        raise CalibrationError(f"the cloud at {where} does not answer: {e}") from None

    def predict(x: np.ndarray) -> np.ndarray:
        body, hdrs = oip.encode_infer_request([oip.Tensor(input_name, "FP32", np.asarray(x, np.float32))],
                                              binary=binary)
        try:
            r = client.post(f"{base}/v2/models/{model}/infer", content=body, headers=hdrs)
        except httpx.HTTPError as e:
            raise CalibrationError(f"the cloud at {where} failed: {e}") from None
        if r.status_code != 200:
            raise CalibrationError(f"the cloud at {where} answered {r.status_code}: "
                                   f"{oip.error_message(r.content, r.reason_phrase)}")
        try:
            out = oip.decode_infer_response(r.content, r.headers.get(oip.HEADER_LENGTH)).outputs
        except ValueError as e:
            raise CalibrationError(f"the cloud at {where}: {e}") from None
        if not out:
            raise CalibrationError(f"the cloud at {where} answered without outputs")
        y = out.get(output_name, next(iter(out.values())))
        return np.asarray(y, dtype=np.float64).reshape(x.shape[0], -1)

    return CloudPath(predict, f"OIP server {where}, model {model!r}", client.close)


def run_in_batches(predict, x: np.ndarray, batch: int, progress_bar=None) -> np.ndarray:
    out = []
    for i in range(0, x.shape[0], batch):
        out.append(np.asarray(predict(x[i:i + batch]), dtype=np.float64).reshape(min(batch, x.shape[0] - i), -1))
        if progress_bar is not None:
            progress_bar.advance(min(batch, x.shape[0] - i))
    return np.concatenate(out)


def batch1_latencies(predict, x: np.ndarray, n: int = LATENCY_SAMPLES) -> np.ndarray:
    """Seconds per batch-1 call on the first n samples (after one warm-up call)."""
    predict(x[:1])
    out = []
    for i in range(min(n, x.shape[0])):
        t0 = time.perf_counter()
        predict(x[i:i + 1])
        out.append(time.perf_counter() - t0)
    return np.asarray(out)


# ---- the result -------------------------------------------------------------------------------------------

@dataclass
class Calibration:
    model: str
    task: str
    data: str
    n: int
    edge_accuracy: float
    cloud_accuracy: float
    chosen: OperatingPoint
    target: Target
    target_met: bool
    frontiers: list[Frontier]
    edge_latency_s: np.ndarray
    cloud_latency_s: np.ndarray
    predicted: LatencyPrediction
    cloud: str
    extra: dict = field(default_factory=dict)
    # Per sample, for re-evaluating other thresholds (cross-validation): edge_ok, cloud_ok, pre_routed, and
    # the score of each criterion.
    per_sample: dict = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """The one JSON object `calibrate --json` prints."""
        return {
            "model": self.model, "task": self.task, "data": self.data, "n": self.n, "cloud": self.cloud,
            "edge_accuracy": self.edge_accuracy, "cloud_accuracy": self.cloud_accuracy,
            "cascade_accuracy": self.chosen.cascade_accuracy,
            "offload_fraction": self.chosen.offload_fraction,
            "escalated_fraction": self.chosen.escalated_fraction,
            "pre_routed_fraction": self.chosen.pre_routed_fraction,
            "threshold": self.chosen.threshold, "criterion": self.chosen.criterion,
            "target": self.target.describe(), "target_met": self.target_met,
            "latency": {
                "edge_mean_ms": float(self.edge_latency_s.mean() * 1e3),
                "cloud_mean_ms": float(self.cloud_latency_s.mean() * 1e3),
                "predicted": self.predicted.to_dict(),
            },
            "criteria": {f.criterion: best_at_offloads(f) for f in self.frontiers},
            **self.extra,
        }

    def routing(self) -> dict:
        """The routing keys the chosen point sets in serving.json."""
        key = "error_threshold" if self.task == "autoencoder" else "confidence_threshold"
        return {key: self.chosen.threshold, "cascade_criterion": self.chosen.criterion}


def best_at_offloads(f: Frontier, offloads=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5)) -> dict:
    """The most accurate system of the frontier within each offload: a compact view of the curve."""
    out = {}
    for o in offloads:
        ok = f.offload <= o + 1e-12
        out[f"{o:.2f}"] = float(f.accuracy[ok].max()) if ok.any() else None
    return out


def correct(task: str, manifest: Manifest, x_pre: np.ndarray, y_out: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per sample: the model's answer matches the label (a classifier's argmax; an autoencoder's anomaly
    decision at the package's threshold)."""
    if task == "autoencoder":
        if manifest.model.threshold is None:
            raise CalibrationError("the autoencoder package has no anomaly threshold to judge answers by")
        err = CRITERIA["reconstruction_error"].score(x_pre, y_out)
        return (err > manifest.model.threshold).astype(np.int64) == labels
    return y_out.reshape(y_out.shape[0], -1).argmax(axis=1) == labels


def calibrate(package_dir: str | os.PathLike, manifest: Manifest, data: HeldOut, edge_predict, cloud: CloudPath,
              target: Target, criteria: list[str] | None = None, edge_latency_s=None, progress=None,
              latency_samples: int = LATENCY_SAMPLES) -> Calibration:
    """Run both paths on the held-out data, compute the frontiers and choose the point for `target`.
    `edge_predict(x_raw) -> outputs` is the bit-exact edge; `edge_latency_s` (measured elsewhere, e.g. on
    the board) replaces the edge's batch-1 timing here."""
    task = manifest.model.task
    if task not in ("classifier", "autoencoder"):
        raise CalibrationError(f"a {task} model has no cascade to calibrate")
    chosen_criteria = [named_criterion(c, task) for c in criteria] if criteria else criteria_for(task)
    from .progress import Progress

    progress = progress or Progress(False)
    x, labels = data.x, data.y
    x_pre = manifest.preprocessing.apply(x)
    with progress.step(f"edge: the package's bit-exact engine on {x.shape[0]} samples"):
        y_edge = run_in_batches(edge_predict, x, 256)
    with progress.step(f"cloud: {cloud.describe} on {x.shape[0]} samples"):
        with progress.bar(x.shape[0], "samples") as bar:
            y_cloud = run_in_batches(cloud.predict, x, CLOUD_BATCH, bar)
    if y_cloud.shape[1:] != y_edge.shape[1:]:
        raise CalibrationError(f"the cloud answers {y_cloud.shape[1:]} per sample, the edge {y_edge.shape[1:]}")
    edge_ok = correct(task, manifest, x_pre, y_edge, labels)
    cloud_ok = correct(task, manifest, x_pre, y_cloud, labels)
    # The gateway's own range check decides which samples never reach the edge.
    pre_routed = ~Router(RoutingPolicy(), manifest).in_range(x_pre)
    scores = {c.name: c.score(x_pre, y_edge) for c in chosen_criteria}
    frontiers = [frontier(c, scores[c.name], edge_ok, cloud_ok, pre_routed) for c in chosen_criteria]
    with progress.step("latency: batch-1 calls on each path"):
        edge_lat = (np.asarray(edge_latency_s, np.float64) if edge_latency_s is not None
                    else batch1_latencies(edge_predict, x, latency_samples))
        cloud_lat = batch1_latencies(cloud.predict, x, latency_samples)
    model = LatencyModel(edge_lat, cloud_lat)
    pre_fraction = float(pre_routed.mean())
    if target.accuracy is None and target.max_offload is None and target.mean_latency_s is None:
        target = Target(accuracy=max(0.0, float(cloud_ok.mean()) - 0.003))
    chosen, met = choose(frontiers, target, pre_fraction, model.mean_s)
    return Calibration(
        model=manifest.model.name, task=task, data=data.source, n=int(x.shape[0]),
        edge_accuracy=float(edge_ok.mean()), cloud_accuracy=float(cloud_ok.mean()), chosen=chosen, target=target,
        target_met=met, frontiers=frontiers, edge_latency_s=edge_lat, cloud_latency_s=cloud_lat,
        predicted=model.predict(chosen.escalated_fraction, chosen.pre_routed_fraction), cloud=cloud.describe,
        per_sample={"edge_ok": edge_ok, "cloud_ok": cloud_ok, "pre_routed": pre_routed, "scores": scores},
    )

