"""A Keras cloud model run in this process as calibration's cloud path: the cloud server's own model wrapper
(same loader, contract check, preprocessing and compiled graph as `lepton-hls cloud DIR --model MODEL`),
without a server in between. Imports TensorFlow."""

from __future__ import annotations

import numpy as np

from .cascade_calibration import CloudPath


def local_cloud(spec: str, package_dir, manifest, weights: str | None = None) -> CloudPath:
    from lepton_cloud.server import KerasModel, ModelChoice

    model = KerasModel(package_dir, manifest, choice=ModelChoice(spec, weights=weights))

    def predict(x: np.ndarray) -> np.ndarray:
        return model(x).reshape(x.shape[0], -1)

    return CloudPath(predict, f"{model.served.source} (TensorFlow on {model.device}, in process)")
