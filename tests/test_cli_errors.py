"""Bad command-line input is refused through the real CLI in one line on stderr with exit status 2, before any
package is run: out-of-range options, batches that are not numbers, hold no samples or hold NaN/inf, and an
output path whose folder does not exist."""

from __future__ import annotations

import numpy as np
import pytest

from cli_runner import run_cli


def refused(proc, command: str, *words: str) -> str:
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"lepton-hls {command}: error: "), lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def pkg(build_pkg, tiny_model):
    return build_pkg(str(tiny_model), samples=200)


@pytest.fixture(scope="module")
def good_batch(tmp_path_factory):
    path = tmp_path_factory.mktemp("batches") / "x.npy"
    np.save(path, np.random.default_rng(0).standard_normal((3, 16)))
    return path


@pytest.mark.parametrize("samples", [0, -5])
def test_verify_refuses_samples_below_one(pkg, samples):
    refused(run_cli("verify", pkg, "--samples", samples), "verify", "--samples", str(samples))


def test_verify_package_refuses_zero_samples_from_python(pkg):
    from lepton_hls.verify import VerifyArgumentError, verify_package

    with pytest.raises(VerifyArgumentError, match="at least 1"):
        verify_package(pkg, samples=0)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.array(["a", "b", "c"]), ("<U1", "real numbers")),
        (np.zeros((0, 16)), ("no samples", "(0, 16)")),
        (np.float64(3.0), ("single number",)),
        (np.array([1 + 2j, 3j]), ("complex",)),
    ],
    ids=["strings", "zero-rows", "zero-d", "complex"],
)
def test_predict_refuses_batches_that_are_not_samples_of_numbers(pkg, tmp_path, array, words):
    path = tmp_path / "x.npy"
    np.save(path, array)
    refused(run_cli("predict", pkg, "--input", path, "--target", "emulator"), "predict", str(path), *words)


def test_predict_refuses_nan_and_inf_rows_naming_how_many(pkg, tmp_path):
    x = np.random.default_rng(1).standard_normal((40, 16))
    x[3, 2] = np.nan
    x[17, 0] = np.inf
    x[17, 5] = -np.inf
    x[31, 15] = -np.inf
    path = tmp_path / "x.npy"
    np.save(path, x)
    line = refused(run_cli("predict", pkg, "--input", path, "--target", "emulator"), "predict", "3 of 40 rows",
                   "NaN or inf", "3, 17, 31")
    assert "RuntimeWarning" not in line


def test_predict_refuses_an_output_in_a_missing_folder(pkg, good_batch, tmp_path):
    out = tmp_path / "missing" / "y.npy"
    refused(run_cli("predict", pkg, "--input", good_batch, "--target", "emulator", "--output", out), "predict",
            str(out.parent), "does not exist")
    assert not out.parent.exists()


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
def test_predict_refuses_a_timeout_that_is_not_a_positive_number(pkg, good_batch, value):
    refused(run_cli("predict", pkg, "--input", good_batch, "--target", "emulated-board", "--timeout", value),
            "predict", "--timeout")


@pytest.mark.parametrize("value", ["0", "-1"])
def test_predict_refuses_max_batch_below_one(pkg, good_batch, value):
    refused(run_cli("predict", pkg, "--input", good_batch, "--target", "emulated-board", "--max-batch", value),
            "predict", "--max-batch", value)


def test_predict_accepts_a_good_batch_and_writes_it(pkg, good_batch, tmp_path):
    from lepton_hls.package import load

    out = tmp_path / "y.npy"
    proc = run_cli("predict", pkg, "--input", good_batch, "--target", "emulator", "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(out), load(pkg).predict(np.load(good_batch)))


def test_old_inference_path_spelling_still_works_with_a_note(pkg, good_batch, tmp_path):
    """`predict --backend emulator` (the inference path's old name) runs as `--target emulator`, with one note."""
    out = tmp_path / "y.npy"
    proc = run_cli("predict", pkg, "--input", good_batch, "--backend", "emulator", "--output", out)
    assert proc.returncode == 0, proc.stderr
    notes = [l for l in proc.stderr.splitlines() if "deprecated" in l]
    assert len(notes) == 1 and "--target emulator" in notes[0]
