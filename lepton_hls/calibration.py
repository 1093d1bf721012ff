"""Model-domain inputs that look like real use, for profiling float models: the zoo's real data where it ships,
else standard normal (the inputs of the example models are standardized features)."""

from __future__ import annotations

import numpy as np


def calibration_inputs(input_shape, n: int, seed: int = 0, zoo_name: str | None = None,
                       preprocessing=None) -> np.ndarray:
    from . import zoo

    if zoo_name:
        data = zoo.get(zoo_name).eval_data(n)
        if data is not None:
            return preprocessing.apply(data[0]) if preprocessing is not None else data[0]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *input_shape))
