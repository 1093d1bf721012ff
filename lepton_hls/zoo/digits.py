"""scikit-learn's bundled 8x8 handwritten digits (1,797 real images, no download) with the zoo's fixed split."""

from __future__ import annotations

import numpy as np

TEST_SIZE = 360
SPLIT_SEED = 0


def _split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float64)[..., None]  # (n, 8, 8, 1), integer pixel values 0..16
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y)


def train_split() -> tuple[np.ndarray, np.ndarray]:
    x_train, _, y_train, _ = _split()
    return x_train, y_train


def test_split() -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels (0..16, shape (360, 8, 8, 1)) and digit labels of the held-out split."""
    _, x_test, _, y_test = _split()
    return x_test, y_test
