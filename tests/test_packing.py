"""The packed word stream of docs/package-layout.md, checked against a bit-by-bit reading of the spec."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lepton_host.errors import FormatError
from lepton_host.fixedpoint import FixedFormat
from lepton_host.packing import lane_bits, lanes_valid, pack, pack_into, unpack, words_for


def reference_pack(raw, fmt):
    """The spec, one lane at a time: lane k sits in word k // (32/L) at bit (k % (32/L)) * L."""
    L = 8 if fmt.width <= 8 else 16 if fmt.width <= 16 else 32
    per = 32 // L
    flat = [int(v) for v in np.asarray(raw).reshape(-1)]
    words = [0] * (-(-len(flat) // per))
    for k, v in enumerate(flat):
        lane = v & ((1 << L) - 1)  # two's complement in L bits == sign/zero extension
        words[k // per] |= lane << ((k % per) * L)
    return np.array(words, dtype=np.uint32)


formats = st.builds(
    lambda width, integer, signed, sat: FixedFormat(width, integer, signed, "TRN", sat),
    width=st.integers(1, 32),
    integer=st.integers(-8, 40),
    signed=st.booleans(),
    sat=st.sampled_from(["WRAP", "SAT"]),
)


@st.composite
def batches(draw):
    fmt = draw(formats)
    n = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    edge = st.sampled_from([fmt.raw_min, fmt.raw_max, 0, fmt.raw_min + 1, fmt.raw_max - 1])
    values = st.one_of(edge, st.integers(fmt.raw_min, fmt.raw_max))
    flat = draw(st.lists(values, min_size=n * int(np.prod(shape)), max_size=n * int(np.prod(shape))))
    raw = np.array(flat, dtype=np.int64).reshape((n, *shape))
    return fmt, raw


@settings(max_examples=300, deadline=None)
@given(batches())
def test_round_trip_and_layout_match_the_spec(case):
    fmt, raw = case
    words = pack(raw, fmt)
    assert words.dtype == np.dtype("<u4")
    np.testing.assert_array_equal(words, reference_pack(raw, fmt))
    back = unpack(words, fmt, raw.size).reshape(raw.shape)
    np.testing.assert_array_equal(back, raw)
    assert lanes_valid(words, fmt, raw.size)


@settings(max_examples=200, deadline=None)
@given(formats, st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40))
def test_quantized_reals_saturate_or_wrap_then_round_trip(fmt, xs):
    """Real values beyond the range hit the format's overflow mode before packing; what arrives is the
    quantized value, for every width 1-32 and both signednesses."""
    raw = fmt.quantize(np.array(xs))
    assert raw.min() >= fmt.raw_min and raw.max() <= fmt.raw_max
    if fmt.saturation == "SAT":
        big = fmt.quantize(np.array([1e30, -1e30]))
        assert big[0] == fmt.raw_max and big[1] == fmt.raw_min
    np.testing.assert_array_equal(unpack(pack(raw, fmt), fmt, raw.size), raw)


def test_lane_widths_and_word_counts():
    assert [lane_bits(FixedFormat(w, 0)) for w in (1, 8, 9, 16, 17, 32)] == [8, 8, 16, 16, 32, 32]
    assert words_for(5, FixedFormat(16, 6)) == 3  # two lanes a word, last word half padding
    assert words_for(5, FixedFormat(6, 0)) == 2
    assert words_for(5, FixedFormat(18, 8)) == 5


def test_samples_are_continuous_not_word_aligned():
    fmt = FixedFormat(8, 8)  # int8-like: four lanes a word
    raw = np.array([[1, 2, 3], [4, 5, 6]])
    words = pack(raw, fmt)
    assert list(words) == [0x04030201, 0x00000605]


def test_negative_values_are_sign_extended_in_their_lane():
    fmt = FixedFormat(6, 0)  # 6 bits in an 8-bit lane
    words = pack(np.array([-1, -32, 31, 0]), fmt)
    assert words[0] == 0x001FE0FF
    unsigned = FixedFormat(6, 0, signed=False)
    assert pack(np.array([63, 0, 1, 32]), unsigned)[0] == 0x2001003F


def test_pack_into_a_dma_buffer_reuses_it_and_zero_pads():
    fmt = FixedFormat(16, 6)
    buf = np.full(8, 0xFFFFFFFF, dtype=np.uint32)
    used = pack_into(buf, np.array([1, -1, 7]), fmt)
    assert used == 2
    assert list(buf[:2]) == [0xFFFF0001, 0x00000007]
    assert buf[2] == 0xFFFFFFFF  # beyond the batch: untouched


def test_flipped_spare_bits_or_padding_are_detected():
    fmt = FixedFormat(12, 4)
    words = pack(np.array([100, -100, 5]), fmt)
    assert lanes_valid(words, fmt, 3)
    bad = words.copy()
    bad[0] ^= 0x4000  # a bit above the 12-bit value in lane 0
    assert not lanes_valid(bad, fmt, 3)
    bad = words.copy()
    bad[1] ^= 0x10000  # the padding lane
    assert not lanes_valid(bad, fmt, 3)


def test_formats_wider_than_a_word_are_refused():
    with pytest.raises(FormatError, match="at most 32-bit"):
        pack(np.array([1]), FixedFormat(40, 10))


reals = st.one_of(
    st.floats(-1e4, 1e4, allow_nan=False),
    st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, 1e30, -1e30]),
)
all_modes = st.builds(
    lambda width, integer, signed, rnd, sat: FixedFormat(width, integer, signed, rnd, sat),
    width=st.integers(1, 32),
    integer=st.integers(-4, 36),
    signed=st.booleans(),
    rnd=st.sampled_from(["TRN", "RND", "RND_CONV", "TRN_ZERO", "RND_ZERO"]),
    sat=st.sampled_from(["WRAP", "SAT", "SAT_SYM", "SAT_ZERO"]),
)


@settings(max_examples=400, deadline=None)
@given(all_modes, st.one_of(st.lists(reals, min_size=1, max_size=30), st.lists(reals, min_size=65, max_size=300)))
def test_lane_quantizer_is_quantize_then_pack(fmt, xs):
    """The runtime's fused hot path writes exactly the words of FixedFormat.quantize + pack."""
    from lepton_host.packing import LaneDequantizer, LaneQuantizer

    x = np.array(xs)
    words = np.full(words_for(x.size, fmt) + 2, 0xDEADBEEF, dtype=np.uint32)
    used = LaneQuantizer(fmt).into(words, x)
    expected = pack(fmt.quantize(x), fmt)
    assert used == expected.size
    np.testing.assert_array_equal(words[:used], expected)
    assert words[used] == 0xDEADBEEF
    out = np.empty(x.size)
    assert LaneDequantizer(fmt).into(out, words, x.size)
    np.testing.assert_array_equal(out, fmt.cast(x))


def test_lane_quantizer_reuses_its_plans_across_buffers_and_sizes():
    from lepton_host.packing import LaneDequantizer, LaneQuantizer

    fmt = FixedFormat(12, 4)
    q, dq = LaneQuantizer(fmt), LaneDequantizer(fmt)
    bufs = [np.zeros(200, np.uint32) for _ in range(2)]
    rng = np.random.default_rng(0)
    for k in range(30):
        n = int(rng.integers(1, 300))
        x = rng.normal(scale=5, size=n)
        w = bufs[k % 2]
        used = q.into_lanes(w, w.view(q.dtype), x)
        np.testing.assert_array_equal(w[:used], pack(fmt.quantize(x), fmt))
        out = np.empty(n)
        assert dq.from_lanes(out, w, w.view(dq.dtype), n)
        np.testing.assert_array_equal(out, fmt.cast(x))


def test_lane_quantizer_refuses_nan():
    from lepton_host.packing import LaneQuantizer

    with pytest.raises(FormatError, match="NaN"):
        LaneQuantizer(FixedFormat(16, 6)).into(np.zeros(4, np.uint32), np.array([1.0, np.nan]))
