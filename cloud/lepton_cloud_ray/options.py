"""The application's options, and the one mapping from them to Ray Serve's deployment settings. The launcher
(cli.py), the application builder that `serve deploy` calls (app.py) and the written config all go through
here, so a local run and a cluster deployment of the same options are the same deployment. No Ray import."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from lepton_host.errors import LeptonError

APP_NAME = "lepton"
MODEL_DEPLOYMENT = "OnnxModel"
INGRESS_DEPLOYMENT = "OipIngress"
# Ray's controller probes replicas this often; a dead one is replaced within about one period.
HEALTH_CHECK_PERIOD_S = 2.0
INGRESS_MAX_ONGOING = 512  # the ingress only waits on model calls: many requests may be in flight on it


class RayOptionError(LeptonError):
    """The Ray Serve options contradict each other or are out of range."""


@dataclass(frozen=True)
class AppOptions:
    onnx: str  # the exported model (`lepton-hls export-onnx`), read where the application is built
    manifest: str | None = None  # a package's manifest.json (or its directory) the model must fit
    replicas: int | None = None  # a fixed number of model replicas (default 1); not with max_replicas
    min_replicas: int | None = None  # autoscaling: set max_replicas (min_replicas defaults to 1)
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None  # autoscaling target per replica (default: max_batch_size)
    num_gpus: float = 0.0  # per model replica (fractions share a GPU); > 0 runs onnxruntime's CUDA provider
    num_cpus: float = 1.0  # per model replica; also onnxruntime's thread count (at least 1)
    max_batch_size: int = 32  # calls one onnxruntime run takes together (each call: one request's rows)
    batch_wait_timeout_s: float = 0.002  # how long a call waits for company
    ingress_replicas: int = 1
    ingress_cpus: float = 0.25
    request_timeout_s: float = 10.0
    replica_retries: int = 2  # a call lost with its replica is sent again this many times

    def __post_init__(self) -> None:
        autoscaled = self.max_replicas is not None
        if autoscaled and self.replicas is not None:
            raise RayOptionError("give either a fixed number of replicas or max_replicas (autoscaling), not both")
        if not autoscaled and (self.min_replicas is not None or self.target_ongoing_requests is not None):
            raise RayOptionError("min_replicas and target_ongoing_requests apply to autoscaling: give max_replicas")
        low = 1 if self.min_replicas is None else self.min_replicas
        checks = [
            (self.replicas is None or self.replicas >= 1, "replicas must be at least 1"),
            (not autoscaled or 0 <= low <= self.max_replicas, "need 0 <= min_replicas <= max_replicas"),
            (not autoscaled or self.max_replicas >= 1, "max_replicas must be at least 1"),
            (self.target_ongoing_requests is None or self.target_ongoing_requests > 0,
             "target_ongoing_requests must be positive"),
            (self.num_gpus >= 0 and self.num_cpus >= 0 and self.ingress_cpus >= 0, "resources must be >= 0"),
            (self.max_batch_size >= 1, "max_batch_size must be at least 1"),
            (self.batch_wait_timeout_s >= 0, "batch_wait_timeout_s must be >= 0"),
            (self.ingress_replicas >= 1, "ingress_replicas must be at least 1"),
            (self.request_timeout_s > 0, "request_timeout_s must be positive"),
            (self.replica_retries >= 0, "replica_retries must be >= 0"),
        ]
        wrong = [message for ok, message in checks if not ok]
        if wrong:
            raise RayOptionError("; ".join(wrong))

    @classmethod
    def from_dict(cls, d: dict) -> AppOptions:
        """From a config's `args` (the builder's input): unknown keys are named, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RayOptionError(f"unknown application args {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "onnx" not in d:
            raise RayOptionError("the application args need onnx: the path of the exported model")
        try:
            return cls(**d)
        except TypeError as e:
            raise RayOptionError(f"application args: {e}") from None

    def to_dict(self) -> dict:
        defaults = AppOptions(onnx=self.onnx)
        return {k: v for k, v in asdict(self).items() if k == "onnx" or v != getattr(defaults, k)}

    @property
    def onnx_threads(self) -> int:
        return max(1, int(self.num_cpus))

    def model_deployment(self) -> dict:
        """`OnnxModel`'s Ray Serve settings (serve.deployment options / a config's deployment entry)."""
        settings = {
            "name": MODEL_DEPLOYMENT,
            # Enough calls in flight on a replica to fill a batch while the previous one runs.
            "max_ongoing_requests": 2 * self.max_batch_size,
            "health_check_period_s": HEALTH_CHECK_PERIOD_S,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }
        if self.max_replicas is None:
            settings["num_replicas"] = self.replicas or 1
        else:
            settings["autoscaling_config"] = {
                "min_replicas": 1 if self.min_replicas is None else self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests or float(self.max_batch_size),
            }
        return settings

    def ingress_deployment(self) -> dict:
        return {
            "name": INGRESS_DEPLOYMENT,
            "num_replicas": self.ingress_replicas,
            "max_ongoing_requests": INGRESS_MAX_ONGOING,
            "ray_actor_options": {"num_cpus": self.ingress_cpus},
        }


def serve_config(options: AppOptions, host: str = "0.0.0.0", port: int = 8001) -> dict:
    """The `serve deploy` config of the application (Ray Serve's ServeDeploySchema)."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": "lepton_cloud_ray.app:build",
            # The builder turns these into both deployments' settings (model_deployment, ingress_deployment);
            # a `deployments:` list here would override them, so none is written.
            "args": options.to_dict(),
        }],
    }
