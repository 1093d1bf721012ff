"""Where the tests find files: the checkout, and hls4ml's example models beside it. One definition of each."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Part of the test environment, not of the tree: CI copies shared/ beside the clone (CONTRIBUTING.md).
EXAMPLES = ROOT.parent / "shared" / "models" / "example-models"


def _missing(path: Path) -> None:
    pytest.fail(
        f"{path} is missing. hls4ml's example models are part of the test environment: put them (the "
        f"*.json architectures and their *_weights.h5) in {EXAMPLES}, i.e. copy shared/ beside this checkout "
        "as CI does (see CONTRIBUTING.md, 'Example models').",
        pytrace=False,
    )


def examples_dir() -> Path:
    """The example-models folder; fails the calling test, naming the folder, when it is not there."""
    if not EXAMPLES.is_dir():
        _missing(EXAMPLES)
    return EXAMPLES


def example_file(name: str) -> Path:
    """One file of the example models (e.g. "KERAS_3layer.json"); fails the calling test when it is missing."""
    path = examples_dir() / name
    if not path.is_file():
        _missing(path)
    return path


def example_model(name: str) -> str:
    """The `build` argument for the example model `name` (e.g. "KERAS_3layer"), unchecked: model lists are
    built at collection time, before any test runs. `require` checks it when a test uses it."""
    return str(EXAMPLES / f"{name}.json")


def require(model: str) -> str:
    """`model` (a zoo name or a model path) as given; a test failure naming the file when it is an example model
    that is not there."""
    path = Path(model)
    if path.parent == EXAMPLES:
        example_file(path.name)
        example_file(f"{path.stem}_weights.h5")
    return model
