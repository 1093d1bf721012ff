"""Deterministic machine-sensor frames for the anomaly-detection model (numpy only).

A frame imitates one log-mel spectrum of a rotating machine, in the style of the MLPerf Tiny anomaly-detection
task: 32 mel-spaced bands (50 Hz .. 8 kHz) holding the rotation frequency f0 and its harmonics over a coloured
noise floor, in dB. Normal machines run at f0 in 180..220 Hz with harmonics whose strength falls as 1/k.
Anomalies are of three kinds: the harmonics shifted (speed fault: f0 in 250..340 Hz), made inharmonic
(bent shaft: harmonic k at k*f0*(1 + 0.04 k)), or a broadband burst (impact / rattle: +8..16 dB over 3..8
neighbouring bands). Everything is drawn from numpy Generators seeded by (seed, stream) so the same call gives
the same frames on every machine.
"""

from __future__ import annotations

import numpy as np

N_BANDS = 32
F_MIN, F_MAX = 50.0, 8000.0
N_HARMONICS = 8
ANOMALY_KINDS = ("shifted", "inharmonic", "burst")

_NORMAL_STREAM, _LABELLED_STREAM = 0, 1


def _mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


_CENTERS = np.linspace(_mel(F_MIN), _mel(F_MAX), N_BANDS)
_WIDTH = (_CENTERS[1] - _CENTERS[0]) * 0.7
_NOISE_TILT = 1.0 / (1.0 + np.arange(N_BANDS) / 6.0)  # more noise energy in the low bands


def _spectrum(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    f0 = rng.uniform(180.0, 220.0, n)
    k = np.arange(1, N_HARMONICS + 1)
    if kind == "shifted":
        f0 = rng.uniform(250.0, 340.0, n)
    freqs = f0[:, None] * k[None, :]
    if kind == "inharmonic":
        freqs = freqs * (1.0 + 0.04 * k[None, :])
    amps = rng.uniform(0.8, 1.2, (n, 1)) / k[None, :] * rng.uniform(0.85, 1.15, (n, N_HARMONICS))
    resp = np.exp(-0.5 * ((_mel(freqs)[:, :, None] - _CENTERS[None, None, :]) / _WIDTH) ** 2)
    power = np.einsum("nh,nhb->nb", amps**2, resp)
    noise_level = rng.uniform(0.01, 0.02, (n, 1))
    power += noise_level * _NOISE_TILT[None, :] * rng.chisquare(8, (n, N_BANDS)) / 8.0
    if kind == "burst":
        start = rng.integers(0, N_BANDS - 8, n)
        width = rng.integers(3, 9, n)
        gain_db = rng.uniform(8.0, 16.0, n)
        bands = np.arange(N_BANDS)[None, :]
        mask = (bands >= start[:, None]) & (bands < (start + width)[:, None])
        power = power * np.where(mask, 10.0 ** (gain_db[:, None] / 10.0), 1.0)
    return 10.0 * np.log10(power)


def normal_frames(n: int, seed: int = 0) -> np.ndarray:
    """n normal frames, shape (n, 32), in dB."""
    return _spectrum(np.random.default_rng((seed, _NORMAL_STREAM)), n, "normal")


def labelled_frames(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n frames, half normal (label 0) and half anomalous (label 1, the three kinds in turn), shuffled."""
    rng = np.random.default_rng((seed, _LABELLED_STREAM))
    n_anom = n // 2
    parts = [_spectrum(rng, n - n_anom, "normal")]
    counts = [n_anom // 3 + (1 if i < n_anom % 3 else 0) for i in range(3)]
    parts += [_spectrum(rng, c, kind) for c, kind in zip(counts, ANOMALY_KINDS)]
    x = np.concatenate(parts)
    y = np.concatenate([np.zeros(n - n_anom, np.int64), np.ones(n_anom, np.int64)])
    order = rng.permutation(n)
    return x[order], y[order]
