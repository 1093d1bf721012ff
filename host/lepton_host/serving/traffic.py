"""The demo's mixed traffic, shared by the demo and the serving benchmark: typical samples, samples outside
the accelerator's input range, and samples the accelerator is unsure about, each labelled with its kind."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lepton_host.manifest import Manifest

from . import routing as R

NORMAL, OUT_OF_RANGE, UNSURE = "normal", "out_of_range", "unsure"


@dataclass
class Sample:
    kind: str
    x: np.ndarray  # (1, *input shape) raw features


def _raw(manifest: Manifest, z: np.ndarray) -> np.ndarray:
    """Preprocessed values -> raw features (the inverse of the manifest's preprocessing)."""
    pre = manifest.preprocessing
    if pre.kind == "standard":
        return z * np.asarray(pre.scale) + np.asarray(pre.mean)
    return z


def mixed_traffic(manifest: Manifest, backend, n: int, fractions=(0.8, 0.1, 0.1), seed: int = 0,
                  unsure_below: float = 0.5, typical: np.ndarray | None = None) -> list[Sample]:
    """`n` single-sample requests in random order. Typical samples come from `typical` (raw features of real
    data) when given, else standard normal in the model's input domain; out-of-range ones push one feature
    past the input format's largest value; unsure ones are picked from a random pool by the edge backend's
    own answer (classifier confidence below `unsure_below`, autoencoder error above its threshold)."""
    rng = np.random.default_rng(seed)
    shape = tuple(manifest.input.shape)
    counts = np.round(np.asarray(fractions) / np.sum(fractions) * n).astype(int)
    counts[0] = n - counts[1:].sum()
    fmt = manifest.input.format
    if typical is not None and len(typical):
        picks = rng.integers(len(typical), size=counts[0])
        samples = [Sample(NORMAL, np.asarray(typical[i : i + 1], dtype=np.float64)) for i in picks]
    else:
        samples = [Sample(NORMAL, _raw(manifest, rng.standard_normal((1, *shape)))) for _ in range(counts[0])]
    for _ in range(counts[1]):
        z = rng.standard_normal((1, *shape)).reshape(1, -1)
        z[0, rng.integers(z.shape[1])] = fmt.max_value * (1.5 + rng.random())
        samples.append(Sample(OUT_OF_RANGE, _raw(manifest, z.reshape(1, *shape))))
    if counts[2]:
        pool = rng.standard_normal((4000, *shape)) * 2.0
        pool = np.clip(pool, fmt.min_value, fmt.max_value)  # in range: unsure, not saturated
        y = backend.predict(_raw(manifest, pool))
        if manifest.model.task == "autoencoder":
            score = -R.reconstruction_error(pool, y)
            cut = -(manifest.model.threshold if manifest.model.threshold is not None else np.median(-score))
        else:
            score, cut = R.confidence(y), unsure_below
        picks = np.flatnonzero(score < cut)
        if picks.size == 0:
            picks = np.argsort(score)[: counts[2]]
        for i in rng.choice(picks, counts[2], replace=picks.size < counts[2]):
            samples.append(Sample(UNSURE, _raw(manifest, pool[i : i + 1])))
    order = rng.permutation(len(samples))
    return [samples[i] for i in order]
