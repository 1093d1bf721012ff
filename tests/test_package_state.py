"""What a package's state says about it: a build either leaves a finished package or nothing at all, a package
that failed its fidelity check is marked so and refused by predict/serve unless the user insists, and the long
commands report their progress on stderr only."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_runner import run_cli
from lepton_host.manifest import (
    Manifest,
    UnverifiedPackageError,
    Verification,
    check_verified,
    load_manifest,
)


def _leftovers(parent: Path, keep=()) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


def _models_with_bad_parts(folder: Path) -> tuple[Path, Path, Path]:
    """-> (a .json model with a layer hls4ml cannot compile, a .json model, weights that do not fit it)."""
    import tensorflow as tf

    inp = tf.keras.Input((8, 1), name="x")
    h = tf.keras.layers.LocallyConnected1D(2, 3, name="local")(inp)
    h = tf.keras.layers.Flatten(name="flat")(h)
    odd = tf.keras.Model(inp, tf.keras.layers.Dense(2, name="fc")(h))
    (folder / "odd.json").write_text(odd.to_json())
    odd.save_weights(str(folder / "odd_weights.h5"))

    inp = tf.keras.Input((16,), name="x")
    small = tf.keras.Model(inp, tf.keras.layers.Dense(5, name="fc")(inp))
    (folder / "small.json").write_text(small.to_json())
    other = tf.keras.Model(inp, tf.keras.layers.Dense(3, name="fc")(inp))
    other.save_weights(str(folder / "other_weights.h5"))
    return folder / "odd.json", folder / "small.json", folder / "other_weights.h5"


# ---- no half-built packages ------------------------------------------------------------------------------------
def test_failed_builds_leave_nothing_behind(tmp_path):
    from lepton_hls.build import build_package
    from lepton_hls.build_config import load_config
    from lepton_hls.progress import Progress
    from lepton_host.errors import LeptonError

    models = tmp_path / "models"
    models.mkdir()
    odd, small, other_weights = _models_with_bad_parts(models)
    outs = tmp_path / "outs"
    outs.mkdir()

    r = run_cli("build", odd, "--out", outs / "odd")
    assert r.returncode == 2 and "class LocallyConnected1D is not supported" in r.stderr, r.stderr[-2000:]
    assert _leftovers(outs) == []

    with pytest.raises(LeptonError, match="do not fit the architecture"):
        build_package(str(small), outs / "small", load_config(), weights=str(other_weights),
                      progress=Progress(False))
    assert _leftovers(outs) == []


def test_interrupted_rebuild_keeps_the_old_package(build_pkg, tiny_model, tmp_path):
    """Ctrl-C in the middle of `build --force` over a finished package (as the C simulation starts compiling,
    the step that takes longest): the old package is untouched and no temporary folder is left."""
    from lepton_hls.build import build_package
    from lepton_hls.build_config import load_config
    from lepton_hls.progress import Progress

    class InterruptedAt(Progress):
        def __init__(self, step_name):
            super().__init__(enabled=False)
            self.step_name = step_name

        def step(self, what, heartbeat_s=None):
            if what == self.step_name:
                self.building = [p.name for p in tmp_path.iterdir() if ".building-" in p.name]
                raise KeyboardInterrupt
            return super().step(what, heartbeat_s)

    out = tmp_path / "pkg"
    shutil.copytree(build_pkg(str(tiny_model)), out)
    before = (out / "manifest.json").read_bytes()
    interrupted = InterruptedAt("write HLS project and compile C simulation")
    with pytest.raises(KeyboardInterrupt):
        build_package(str(tiny_model), out, load_config(), verify_samples=50, force=True, progress=interrupted)
    assert len(interrupted.building) == 1  # the build was under way, in its temporary folder
    assert _leftovers(tmp_path) == ["pkg"]
    assert (out / "manifest.json").read_bytes() == before
    load_manifest(out)  # every artifact still matches


def test_finished_package_works_where_it_was_moved(build_pkg, tiny_model):
    import lepton_hls

    pkg = build_pkg(str(tiny_model))
    assert _leftovers(pkg.parent) == ["pkg"]  # neither the build folder nor hls4ml's _profile folder is left
    m = load_manifest(pkg)
    assert m.verification.passed and m.verification.report == "reports/verify.json"
    assert m.verification.samples == 200 and m.verification.identical_rows == 1.0
    # what named the build folder names the package's place now (and is re-hashed: load_manifest checked it)
    for rel in ("hls/hls4ml_config.yml", "reports/verify.json"):
        assert ".building-" not in (pkg / rel).read_text(), rel
    assert json.loads((pkg / "reports" / "verify.json").read_text())["package"] == str(pkg.absolute())
    assert f"OutputDir: {pkg.absolute() / 'hls'}" in (pkg / "hls" / "hls4ml_config.yml").read_text()
    # a plain directory's permissions, not a private temporary folder's
    probe = pkg.parent / "probe"
    probe.mkdir()
    try:
        assert (pkg.stat().st_mode & 0o777) == (probe.stat().st_mode & 0o777)
    finally:
        probe.rmdir()
    x = np.random.default_rng(3).standard_normal((40, 16))
    package = lepton_hls.load(pkg)
    y = package.predict(x)
    assert y.shape == (40, 4) and np.ptp(y) > 0
    assert np.array_equal(y, package.predict(x, engine="csim"))


# ---- packages that failed their fidelity check -----------------------------------------------------------------
@pytest.fixture(scope="module")
def failed_package(tiny_model, tmp_path_factory):
    """The tiny model built with fc1's result narrowed to fixed<10,4>: fc1 loses bits, so the package misses
    its fidelity. `build` keeps it, marked failed, exits 1, and prints the type that would fix the layer."""
    folder = tmp_path_factory.mktemp("narrow")
    cfg = folder / "narrow.yml"
    cfg.write_text("layer_precision:\n  fc1:\n    result: fixed<10,4>\n")
    out = folder / "pkg"
    r = run_cli("build", tiny_model, "--out", out, "--config", cfg, "--samples", 100)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "marked failed in its manifest" in r.stderr and "FAIL" in r.stdout
    assert "layer_precision:\n    fc1:\n      result: fixed<" in r.stdout, r.stdout
    assert "off_grid rows also differ because" in r.stdout, r.stdout
    assert _leftovers(folder, keep={"narrow.yml"}) == ["pkg"]
    return out


def test_failed_fidelity_is_recorded_in_the_manifest(failed_package):
    v = load_manifest(failed_package).verification
    assert v.recorded and v.failed and v.samples == 100
    assert v.identical_rows < 1.0 and v.identical_rows_min == 1.0 and v.argmax_agreement_min == 0.995
    assert v.first_difference.startswith("fc1 ")
    report = json.loads((failed_package / v.report).read_text())
    assert report["passed"] is False and report["identical_rows"] == v.identical_rows


def test_verify_names_the_narrowed_layer_and_the_type_that_fixes_it(failed_package, tiny_model, tmp_path):
    import yaml

    from float64_reference import csim_vs_float64
    from lepton_hls.build import resolve_model
    from lepton_hls.build_config import load_config
    from lepton_hls.keras_io import load_keras

    report = json.loads((failed_package / "reports" / "verify.json").read_text())
    assert report["identical_rows_on_grid"] < 1.0
    assert report["identical_rows_off_grid"] is not None and "input quantization" in report["off_grid_explanation"]
    first = report["first_difference"]
    assert first["name"] == "fc1" and first["set"] == "on_grid"
    suggested = yaml.safe_load(first["suggested_config"])["layer_precision"]
    assert list(suggested) == ["fc1"] and "result" in suggested["fc1"]
    # The suggestion, as the user would paste it, is exact: the same conversion with it, compiled and compared
    # with the float64 model on the input grid (a package would add the traced rebuild of its verify).
    model = load_keras(resolve_model(str(tiny_model)).files)
    identical, _, _ = csim_vs_float64(model, tmp_path, load_config(layer_precision=suggested))
    assert identical == 1.0


def test_predict_refuses_a_failed_package_unless_allowed(failed_package, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((6, 16)))
    r = run_cli("predict", failed_package, "-i", x, "--target", "emulator")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    v = load_manifest(failed_package).verification
    assert str(failed_package) in lines[0] and f"identical rows {v.identical_rows:.4f} (needs >= 1.0)" in lines[0]
    assert "--allow-unverified" in lines[0]

    r = run_cli("predict", failed_package, "-i", x, "--target", "emulator", "--allow-unverified", "-o",
                tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [l for l in r.stderr.splitlines() if "warning" in l]
    assert len(warnings) == 1 and "failed its fidelity check" in warnings[0] and str(failed_package) in warnings[0]
    assert np.load(tmp_path / "y.npy").shape == (6, 4)


def test_serve_refuses_a_failed_package_unless_allowed(failed_package, capsys):
    from lepton_hls.cli import build_parser
    from lepton_hls.commands.serve import build_gateway

    args = build_parser().parse_args(["serve", str(failed_package), "--target", "emulator"])
    with pytest.raises(UnverifiedPackageError, match="--allow-unverified"):
        build_gateway(args)
    args = build_parser().parse_args(["serve", str(failed_package), "--target", "emulator", "--allow-unverified"])
    _, _, backend = build_gateway(args)
    backend.close()
    assert "lepton-hls serve: warning:" in capsys.readouterr().err


def test_verify_updates_the_record_and_reports_progress_on_stderr(failed_package, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(failed_package, pkg)
    r = run_cli("verify", pkg, "--samples", 60, "--json")
    assert r.returncode == 1
    report = json.loads(r.stdout)  # stdout is exactly one JSON object
    assert report["passed"] is False and report["samples"] == 60
    assert "[1] load the package" in r.stderr and "input sets [" in r.stderr and "2/2" in r.stderr
    v = load_manifest(pkg).verification
    assert v.failed and v.samples == 60


def test_manifests_without_a_record_load_as_not_recorded(build_pkg, tiny_model):
    m = load_manifest(build_pkg(str(tiny_model)))
    old = dataclasses.replace(m, verification=Verification()).to_dict()
    assert "verification" not in old  # what manifests written before the field look like
    loaded = Manifest.from_dict(json.loads(json.dumps(old)))
    assert not loaded.verification.recorded
    assert check_verified(loaded, "pkg") is None

    failed = dataclasses.replace(m, verification=dataclasses.replace(m.verification, passed=False)).to_dict()
    with pytest.raises(UnverifiedPackageError):
        check_verified(Manifest.from_dict(failed), "pkg")
    assert "running it anyway" in check_verified(Manifest.from_dict(failed), "pkg", allow_unverified=True)
    # the record is covered by the digest: flipping it by hand is caught
    failed["verification"]["passed"] = True
    with pytest.raises(Exception, match="edited after it was written"):
        Manifest.from_dict(failed)


# ---- progress -------------------------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_lines_on_a_pipe_and_redraws_on_a_terminal():
    from lepton_hls.progress import Progress

    pipe = io.StringIO()
    p = Progress(stream=pipe)
    with p.step("work"), p.bar(100, "items") as bar:
        for _ in range(100):
            bar.advance()
    lines = pipe.getvalue().splitlines()
    bars = [l for l in lines if "items [" in l]
    assert 2 <= len(bars) <= 11 and "100/100" in bars[-1] and "\r" not in pipe.getvalue()
    assert lines[0] == "[1] work ..." and lines[-1].startswith("[1] work: done in")

    term = _Terminal()
    p = Progress(stream=term)
    with p.bar(3, "sets") as bar:
        for name in ("a", "b", "c"):
            p.note(f"{name} compared")
            bar.advance(detail=name)
    text = term.getvalue()
    last = text.split("\r")[-1]
    assert "sets [" in last and " 3/3 " in last and last.endswith(" c\n")
    # a note printed while the bar is drawn gets a line of its own
    assert all(f"\r\x1b[K    {n} compared\n" in text for n in "abc")


def test_rtl_jobs_default_to_the_core_count():
    from lepton_hls.cli import build_parser

    assert build_parser().parse_args(["rtl", "pkg"]).jobs == (os.cpu_count() or 1)


@pytest.mark.slow  # a Verilator build: minutes on a busy 2-core machine
def test_rtl_shows_its_steps_on_stderr_only(build_pkg, tiny_model, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(build_pkg(str(tiny_model)), pkg)
    r = run_cli("rtl", pkg, "--check-samples", 500, "--no-vhdl", "--jobs", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    for step in ("trace the package's engine graph", "build the Verilator emulator (2 jobs)",
                 "compare the Verilator emulation with the C simulation on 500 inputs"):
        assert step in r.stderr, step
    assert "inputs [" in r.stderr and "500/500" in r.stderr
    assert all(line.startswith("rtl: ") for line in r.stdout.strip().splitlines()), r.stdout
