"""Shared fixtures: packages are built once per test session and reused by every test that needs them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT.parent / "shared" / "models" / "example-models"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def build_pkg(tmp_path_factory):
    """build_pkg(model, samples=200, **config) -> package dir, built once per distinct arguments."""
    cache: dict = {}

    def _build(model: str = "jet_tagger", samples: int = 200, weights: str | None = None, **config):
        key = (model, samples, weights, tuple(sorted(config.items())))
        if key not in cache:
            from lepton_hls.build import build_package
            from lepton_hls.build_config import load_config
            from lepton_hls.progress import Progress

            out = tmp_path_factory.mktemp(Path(model).stem) / "pkg"
            with contextlib.redirect_stdout(None):
                build_package(model, out, load_config(**config), weights=weights, verify_samples=samples,
                                          progress=Progress(False))
            cache[key] = out
        return cache[key]

    return _build


@pytest.fixture(scope="session")
def jet_package(build_pkg) -> Path:
    return build_pkg("jet_tagger")


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    if not EXAMPLES.is_dir():
        pytest.skip(f"example models not found at {EXAMPLES}")
    return EXAMPLES
