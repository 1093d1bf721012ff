"""Shared fixtures: packages are built once per test session and reused by every test that needs them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest


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


# ---- the RTL path's tiny network (shared by the RTL tests and the RTL-backed board test) ----
@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 16-8-4 QKeras MLP with 6-bit weights and a quantized_relu, saved as a full-model .h5."""
    from lifecycle_models import save_tiny_mlp

    return save_tiny_mlp(tmp_path_factory.mktemp("tiny_model") / "tiny_mlp.h5", seed=1)


@pytest.fixture(scope="session")
def tiny_rtl(build_pkg, tiny_model):
    """A package of the tiny model with its RTL written, checked and recorded."""
    from lepton_hls.rtl.package import rtl_package

    pkg = build_pkg(str(tiny_model), samples=200)
    # Every core for the Verilator build, as `lepton-hls rtl` does by default (its make runs the compiles in parallel).
    result = rtl_package(pkg, clock_ns=5.0, check_samples=10000, jobs=os.cpu_count() or 1, log=lambda *_: None)
    return pkg, result
