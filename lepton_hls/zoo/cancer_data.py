"""scikit-learn's bundled Wisconsin Diagnostic Breast Cancer data (569 real tumours, 30 features, no download) with
the zoo's fixed split.

Each row describes the cell nuclei in a digitized image of a fine-needle aspirate of a breast mass: mean, standard
error and worst value of 10 measurements (radius, texture, perimeter, area, smoothness, compactness, concavity,
concave points, symmetry, fractal dimension). Labels in scikit-learn's order: 0 malignant (212), 1 benign (357).
"""

from __future__ import annotations

import numpy as np

CLASSES = ("malignant", "benign")
TEST_SIZE = 171  # 30%
SPLIT_SEED = 0


def _split():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from . import ZooError

    data = load_breast_cancer()
    if tuple(data.target_names) != CLASSES:  # the trained models' outputs are in this order
        raise ZooError(
            f"scikit-learn's breast cancer labels are {tuple(data.target_names)}, the zoo's models expect {CLASSES}; "
            "use a scikit-learn version that keeps this order"
        )
    x = data.data.astype(np.float64)  # (569, 30), raw measurements in their own units
    y = data.target.astype(np.int64)
    return train_test_split(x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y)


def train_split() -> tuple[np.ndarray, np.ndarray]:
    x_train, _, y_train, _ = _split()
    return x_train, y_train


def test_split() -> tuple[np.ndarray, np.ndarray]:
    """Raw features (shape (171, 30)) and labels (0 malignant, 1 benign) of the held-out split."""
    _, x_test, _, y_test = _split()
    return x_test, y_test
