"""Output integrity on the wire and the golden-vector self-test.

The check word: every output packet ends with the CRC-32 of its data words, computed by the stream IP before
anything can flip a bit in flight; the runtime must raise IntegrityError for bits flipped in data lanes (which
the lane-format invariants cannot see, e.g. in an even batch of the 5-output tiny model that fills whole words)
and never return such a batch. The self-test: golden vectors through each backend, compared bit for bit.
"""

from __future__ import annotations

import shutil
import zlib

import numpy as np
import pytest

from lepton_host import packing
from lepton_host.fixedpoint import FixedFormat
from lepton_host.manifest import load_manifest
from lepton_host.selftest import GOLDEN, SelfTestResult, write_golden

pytest.importorskip("pynq")

from test_emulated_board import dev, inputs, tiny  # noqa: E402,F401  (shared session build)

from lepton_host.backends import EmulatorBackend, emulated_board_backend  # noqa: E402
from lepton_host.emulator import CsimEmulator  # noqa: E402
from lepton_host.runtime import Accelerator, DeviceError, IntegrityError  # noqa: E402

DATA_LANE_MASKS = [0x80008000, 0x1, 0x100, 0x8000, 0x10000]


# ---- the check word itself -----------------------------------------------------------------------------------
def test_check_word_is_zlib_crc32_of_the_little_endian_data_words_and_sees_every_single_bit_flip():
    words = np.random.default_rng(0).integers(0, 2**32, size=7, dtype=np.uint64).astype(np.uint32)
    packet = packing.with_check_word(words)
    assert packet.dtype == np.dtype("<u4") and packet.size == 8
    assert int(packet[-1]) == zlib.crc32(words.astype("<u4").tobytes())
    for k in range(words.size * 32):
        flipped = words.copy()
        flipped[k // 32] ^= np.uint32(1 << (k % 32))
        assert packing.check_word(flipped) != packet[-1], f"bit {k} flipped unseen"


def test_packet_words_count_the_check_word():
    fmt = FixedFormat.parse("ap_fixed<14,5>")
    assert packing.packet_words(10, fmt) == packing.words_for(10, fmt) + 1 == 6
    assert packing.packet_words(15, fmt) == 9  # 8 data words, the last one padded, then the check word


# ---- corruption in flight on the emulated board ---------------------------------------------------------------
@pytest.mark.parametrize("mask", DATA_LANE_MASKS, ids=hex)
@pytest.mark.parametrize("n", [2, 4, 3, 7, 40])  # even batches fill whole words; 40 > max_batch: chunks
def test_bits_flipped_in_data_lanes_raise_integrity_error_and_no_batch_is_returned(tiny, dev, mask, n):
    pkg, reference = tiny
    acc = Accelerator.load(pkg, max_batch=16, timeout_s=1.0)
    x = inputs(n, seed=n)
    dev.inject("corrupt", xor_mask=mask, every=3)
    with pytest.raises(IntegrityError, match="check word") as info:
        acc.predict(x)
    assert isinstance(info.value, DeviceError)
    dev.clear()
    np.testing.assert_array_equal(acc.predict(x), reference(x))  # the DMA was reset: served again
    acc.close()


def test_data_lane_flips_in_an_even_batch_pass_the_lane_invariants_so_only_the_check_word_sees_them(tiny, dev):
    """Why the check word exists: the 5 x 16-bit outputs of an even batch fill whole words, so there is no
    padding to check, and a flipped low bit leaves a valid lane."""
    pkg, _ = tiny
    m = load_manifest(pkg)
    fmt = m.output.format
    raw = CsimEmulator(pkg).predict_raw(m.input.format.quantize(inputs(4, seed=1))).reshape(-1)
    data = packing.pack(raw, fmt)
    corrupted = data ^ np.uint32(0x1)
    assert packing.lanes_valid(corrupted, fmt, raw.size)  # the old check passes it
    assert packing.check_word(corrupted) != packing.check_word(data)


def test_a_corrupted_batch_raises_on_the_raw_path_too(tiny, dev):
    pkg, _ = tiny
    acc = Accelerator.load(pkg, max_batch=16)
    raw = load_manifest(pkg).input.format.quantize(inputs(2))
    dev.inject("corrupt", xor_mask=0x10000, every=1)
    with pytest.raises(IntegrityError):
        acc.predict_raw(raw)


# ---- golden-vector self-test ----------------------------------------------------------------------------------
@pytest.fixture()
def golden_pkg(tiny, tmp_path):
    """A copy of the tiny package with golden vectors from its C simulation, listed in the manifest as a build
    lists them."""
    pkg, _ = tiny
    copy = tmp_path / "pkg"
    shutil.copytree(pkg, copy)
    write_golden(copy, CsimEmulator(copy), n=24)
    m = load_manifest(copy, verify=False)  # an unlisted file in selftest/ is refused until it is listed
    m.add_artifacts(copy, [GOLDEN])
    m.save(copy)
    return copy


class WrongInOneBit:
    """A fabric that is right everywhere but one bit of one sample (a stuck bit, a marginal path)."""

    def __init__(self, compute, sample: int):
        self.compute, self.sample = compute, sample

    def predict_raw(self, raw):
        out = np.array(self.compute.predict_raw(raw), dtype=np.int64)
        if len(out) > self.sample:
            out[self.sample].reshape(-1)[0] ^= 1
        return out


def test_self_test_passes_on_the_emulator_and_the_emulated_board(golden_pkg, dev):
    board_backend = emulated_board_backend(golden_pkg, engine="csim", max_batch=8)  # 24 samples: three transfers
    for backend in (EmulatorBackend(golden_pkg, engine="csim"), board_backend):
        result = backend.self_test()
        assert isinstance(result, SelfTestResult)
        assert (result.passed, result.samples, result.mismatches) == (True, 24, 0), result.detail
        assert "identical" in result.detail
        backend.close()


def test_self_test_fails_a_board_with_corruption_in_flight_and_passes_it_once_cleared(golden_pkg, dev):
    backend = emulated_board_backend(golden_pkg, engine="csim", max_batch=8)
    dev.inject("corrupt", xor_mask=0x100, every=5)
    result = backend.self_test()
    assert result.passed is False and result.samples == 24
    assert "IntegrityError" in result.detail
    dev.clear()
    assert backend.self_test().passed is True
    backend.close()


def test_self_test_counts_samples_that_differ_by_one_bit(golden_pkg, dev):
    m = load_manifest(golden_pkg)
    backend = emulated_board_backend(golden_pkg, engine="csim", max_batch=32)  # all 24 samples in one transfer
    dev.attach(WrongInOneBit(CsimEmulator(golden_pkg), sample=5), model_sha256=m.model.sha256)
    result = backend.self_test()
    assert (result.passed, result.mismatches) == (False, 1)
    assert "sample 5" in result.detail
    backend.close()


def test_self_test_without_golden_vectors_or_fast_engine_has_no_verdict(tiny):
    pkg, _ = tiny
    assert not (pkg / GOLDEN).exists() and not (pkg / "engine").exists()
    result = EmulatorBackend(pkg, engine="csim").self_test()
    assert result.passed is None and result.samples == 0
    assert GOLDEN in result.detail and "fast engine" in result.detail


def test_self_test_refuses_golden_vectors_altered_after_loading(golden_pkg):
    backend = EmulatorBackend(golden_pkg, engine="csim")
    with np.load(golden_pkg / GOLDEN) as z:
        fields = dict(z)
    fields["outputs"] = fields["outputs"] + 1
    np.savez(golden_pkg / GOLDEN, **fields)
    result = backend.self_test()
    assert result.passed is None and "sha256" in result.detail


# ---- what `lepton-hls build` writes --------------------------------------------------------------------------
def test_build_stores_hashed_golden_vectors_and_older_packages_fall_back_to_the_fast_engine(
    build_pkg, tiny_model, tmp_path
):
    pkg = build_pkg(str(tiny_model), samples=200)
    m = load_manifest(pkg)
    assert GOLDEN in m.artifacts
    with np.load(pkg / GOLDEN) as z:
        assert 16 <= len(z["inputs"]) <= 64 and str(z["output_format"]) == str(m.output.format)
        raw_in = z["inputs"]
    assert np.array_equal(raw_in, m.input.format.quantize(m.input.format.to_float(raw_in)))  # on the grid
    # The golden outputs come from the C simulation; the fast engine agrees with them bit for bit.
    fast = EmulatorBackend(pkg, engine="fast").self_test()
    assert (fast.passed, fast.samples) == (True, len(raw_in)), fast.detail
    older = tmp_path / "older"
    shutil.copytree(pkg, older)
    (older / GOLDEN).unlink()
    (older / "selftest").rmdir()
    mo = load_manifest(older, verify=False)
    del mo.artifacts[GOLDEN]
    mo.save(older)
    result = EmulatorBackend(older, engine="csim").self_test()
    assert result.passed is True and "fast engine" in result.detail
