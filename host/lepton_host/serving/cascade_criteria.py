"""How sure the edge is of its answer: the scores the cascade escalates on, one definition for the gateway
(routing.py) and for calibration (`lepton-hls calibrate`), so a threshold chosen on held-out data means the
same thing when it is served.

Classifier criteria are confidences in [0, 1], higher = surer, and a sample is escalated when its confidence
is below the threshold:
- `max_probability`: the top class's probability;
- `margin`: the top class's probability minus the runner-up's;
- `entropy`: 1 - H(p) / log(K), so 1 is a one-hot answer and 0 the uniform one.
The autoencoder criterion is `reconstruction_error` (mean squared error between the preprocessed input and the
output), escalated when above its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import BadRequest

MAX_PROBABILITY = "max_probability"
MARGIN = "margin"
ENTROPY = "entropy"
RECONSTRUCTION_ERROR = "reconstruction_error"


def probabilities(y: np.ndarray) -> np.ndarray:
    """Class probabilities per sample. Outputs that already are probabilities (a softmax head, within
    fixed-point rounding) are used as they are, renormalised; logits go through a softmax first."""
    y = np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1)
    if y.size and (y >= 0).all() and np.allclose(y.sum(axis=1), 1.0, atol=0.05):
        return y / np.maximum(y.sum(axis=1, keepdims=True), 1e-12)
    z = np.exp(y - y.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def max_probability(y: np.ndarray) -> np.ndarray:
    return probabilities(y).max(axis=1)


def margin(y: np.ndarray) -> np.ndarray:
    p = probabilities(y)
    if p.shape[1] < 2:
        return p[:, 0]
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy_confidence(y: np.ndarray) -> np.ndarray:
    p = probabilities(y)
    if p.shape[1] < 2:
        return np.ones(p.shape[0])
    h = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)
    return 1.0 - h / np.log(p.shape[1])


def reconstruction_error(x_pre: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = np.asarray(x_pre, dtype=np.float64).reshape(x_pre.shape[0], -1)
    y = np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1)
    if x.shape != y.shape:
        raise BadRequest(f"autoencoder output shape {y.shape[1:]} differs from its input {x.shape[1:]}")
    return ((x - y) ** 2).mean(axis=1)


@dataclass(frozen=True)
class Criterion:
    name: str
    task: str  # the model task it applies to
    # (preprocessed input, edge output) -> score per sample
    score: Callable[[np.ndarray, np.ndarray], np.ndarray]
    escalate_above: bool  # True: a score above the threshold escalates; False: below

    def unsure(self, x_pre: np.ndarray, y: np.ndarray, threshold: float) -> np.ndarray:
        s = self.score(x_pre, y)
        return s > threshold if self.escalate_above else s < threshold


CRITERIA: dict[str, Criterion] = {
    c.name: c for c in (
        Criterion(MAX_PROBABILITY, "classifier", lambda x, y: max_probability(y), escalate_above=False),
        Criterion(MARGIN, "classifier", lambda x, y: margin(y), escalate_above=False),
        Criterion(ENTROPY, "classifier", lambda x, y: entropy_confidence(y), escalate_above=False),
        Criterion(RECONSTRUCTION_ERROR, "autoencoder", reconstruction_error, escalate_above=True),
    )
}
DEFAULT_CRITERION = {"classifier": MAX_PROBABILITY, "autoencoder": RECONSTRUCTION_ERROR}


def criteria_for(task: str) -> list[Criterion]:
    return [c for c in CRITERIA.values() if c.task == task]


def criterion(name: str | None, task: str) -> Criterion:
    """The named criterion (None: the task's default), checked against the model's task."""
    name = name or DEFAULT_CRITERION.get(task)
    if name not in CRITERIA:
        raise BadRequest(f"unknown cascade criterion {name!r}; known: {', '.join(CRITERIA)}")
    c = CRITERIA[name]
    if c.task != task:
        names = ", ".join(x.name for x in criteria_for(task)) or "none"
        raise BadRequest(f"cascade criterion {name!r} applies to {c.task}s; this model is a {task} ({names})")
    return c
