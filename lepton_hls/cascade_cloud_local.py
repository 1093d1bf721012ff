"""A Keras cloud model run in this process as calibration's cloud path: the same loader and contract check
as `lepton-hls cloud DIR --model MODEL`, without a server in between. Imports TensorFlow."""

from __future__ import annotations

import numpy as np

from .cascade_calibration import CloudPath


def local_cloud(spec: str, package_dir, manifest) -> CloudPath:
    from lepton_cloud.served_model import ModelChoice, load_served_model

    served = load_served_model(package_dir, manifest, ModelChoice(spec))

    def predict(x: np.ndarray) -> np.ndarray:
        y = served.call(served.preprocessing.apply(x).astype(np.float32))
        return np.asarray(y, dtype=np.float64).reshape(x.shape[0], -1)

    return CloudPath(predict, f"{served.source} (TensorFlow, in process)")
