"""The AXI4-Stream wrapper in C simulation: generated from the templates for real hls4ml projects, compiled
with g++ against their firmware, fed packed words and compared with hls4ml's own C simulation.

Two tiny models cover the wire cases: 5 inputs in 8-bit lanes with 3 outputs in 16-bit lanes (samples
straddle words on both sides, odd batches end in a padded word) and 16 inputs in 16-bit lanes with 5 outputs
in 32-bit lanes (the jet-tagger shape)."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from lepton_host.fixedpoint import FixedFormat
from lepton_host.manifest import HlsInfo, Manifest, ModelInfo, TensorSpec

hls4ml = pytest.importorskip("hls4ml")
keras = pytest.importorskip("tensorflow.keras")

from lepton_hls import ip_wrapper  # noqa: E402

CASES = {
    # name: (input shape, hidden, n_out, input precision, output precision, io_type)
    "narrow": ((5,), 4, 3, "ap_fixed<8,3>", "ap_fixed<16,6>", "io_parallel"),
    "jetlike": ((16,), 8, 5, "ap_fixed<16,6>", "ap_fixed<18,8>", "io_parallel"),
    # io_stream CNN: the core takes 36 beats of 2 channels and gives one beat of 4
    "stream_cnn": ((6, 6, 2), 3, 4, "ap_fixed<12,4>", "ap_ufixed<10,2>", "io_stream"),
}


def make_package(root: Path, name: str, seed: int = 0) -> tuple[Path, object]:
    """A minimal package: an hls4ml Vitis project in `hls/` and a manifest describing it."""
    shape, hidden, n_out, in_prec, out_prec, io_type = CASES[name]
    rng = np.random.RandomState(seed)
    if len(shape) == 1:
        hidden_layer = keras.layers.Dense(hidden, activation="relu", name="fc1")
        layers = [hidden_layer]
    else:
        layers = [keras.layers.Conv2D(hidden, 3, activation="relu", name="fc1"), keras.layers.Flatten(name="flat")]
    out_act = "relu" if out_prec.startswith("ap_ufixed") else None
    model = keras.models.Sequential(
        [keras.layers.Input(shape, name="x"), *layers, keras.layers.Dense(n_out, activation=out_act, name="out")]
    )
    model.set_weights([rng.uniform(-1, 1, w.shape).round(3) for w in model.get_weights()])
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    cfg["LayerName"]["x"]["Precision"]["result"] = in_prec
    for layer in ("out", "out_linear", "out_relu"):  # hls4ml splits the activation off; its type is the output's
        if layer in cfg["LayerName"]:
            cfg["LayerName"][layer]["Precision"]["result"] = out_prec
    pkg = root / name
    hls_model = hls4ml.converters.convert_from_keras_model(
        model,
        hls_config=cfg,
        output_dir=str(pkg / "hls"),
        backend="Vitis",
        io_type=io_type,
        part="xc7z020clg400-1",
        clock_period=10,
    )
    hls_model.compile()
    n_in = int(np.prod(shape))
    manifest = Manifest(
        model=ModelInfo(name=name, source="test", sha256="0" * 64, task="regressor"),
        inputs=[TensorSpec("x", shape, FixedFormat.parse(in_prec))],
        outputs=[TensorSpec("out", (n_out,), FixedFormat.parse(out_prec))],
        hls=HlsInfo(
            backend="Vitis", board=None, part="xc7z020clg400-1", clock_ns=10.0, io_type=io_type,
            strategy="Latency", reuse_factor=1,
        ),
    )  # fmt: skip
    assert manifest.input.size == n_in
    manifest.save(pkg)
    return pkg, hls_model


def reference_pack(raw: np.ndarray, lane: int) -> list[int]:
    """The spec, lane by lane: lane k in word k // (32/L) at bit (k % (32/L)) * L, last word zero-padded."""
    per = 32 // lane
    flat = [int(v) for v in raw.reshape(-1)]
    words = [0] * (-(-len(flat) // per))
    for k, v in enumerate(flat):
        words[k // per] |= (v & ((1 << lane) - 1)) << ((k % per) * lane)
    return words


def reference_unpack(words: list[int], count: int, lane: int, fmt: FixedFormat) -> np.ndarray:
    per = 32 // lane
    raw = []
    for k in range(count):
        v = (words[k // per] >> ((k % per) * lane)) & ((1 << lane) - 1)
        if fmt.signed and v >> (lane - 1):
            v -= 1 << lane
        raw.append(v)
    return np.array(raw, dtype=np.int64)


def run_tb(exe: Path, batches: list[list[int]], tmp: Path) -> tuple[subprocess.CompletedProcess, list]:
    src, dst = tmp / "in.txt", tmp / "out.txt"
    lines = []
    for words in batches:
        lines.append(f"batch {len(words)}")
        lines += [f"{w:08x}" for w in words]
    src.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([str(exe), str(src), str(dst)], capture_output=True, text=True, timeout=120)
    out, cur = [], None
    if dst.exists():
        for line in dst.read_text().splitlines():
            if line.startswith("batch"):
                cur = []
                out.append(cur)
            else:
                w, last = line.split()
                cur.append((int(w, 16), int(last)))
    return proc, out


# The jet-like core is the slow suite's: the narrow one covers io_parallel lanes (odd widths, padding) by default.
SLOW_CASES = {"jetlike"}


@pytest.fixture(scope="module", params=[pytest.param(c, marks=[pytest.mark.slow] if c in SLOW_CASES else [])
                                        for c in sorted(CASES)])
def built(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"ipw_{request.param}")
    pkg, hls_model = make_package(root, request.param)
    manifest = Manifest.from_dict(__import__("json").loads((pkg / "manifest.json").read_text()))
    spec = ip_wrapper.wrapper_spec(manifest, pkg / "hls")
    ip = ip_wrapper.generate_ip(spec, pkg / "ip")
    exe = ip_wrapper.build_csim(ip, pkg / "hls", root / "tb")
    return spec, hls_model, exe, root


def spec_name(hls_model) -> str:
    return Path(hls_model.config.get_output_dir()).parent.name


def _inputs(spec, n, seed):
    fmt = spec.in_format
    rng = np.random.RandomState(seed)
    # Raw values over the whole range, edges included, so sign extension and lane masks are exercised.
    raw = rng.randint(fmt.raw_min, fmt.raw_max + 1, size=(n, spec.n_in)).astype(np.int64)
    raw[0, 0], raw[-1, -1] = fmt.raw_min, fmt.raw_max
    return raw


@pytest.mark.parametrize("batch_sizes", [[1], [7, 1, 64]])
def test_wrapper_is_bit_identical_to_hls4ml_csim(built, batch_sizes, tmp_path):
    spec, hls_model, exe, _ = built
    raws = [_inputs(spec, n, seed=n) for n in batch_sizes]
    proc, outs = run_tb(exe, [reference_pack(r, spec.in_lane) for r in raws], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wrapper == core" in proc.stdout
    assert len(outs) == len(batch_sizes)
    for raw, words, n in zip(raws, outs, batch_sizes):
        # Word count and TLAST: ceil(n * n_out / lanes-per-word) data words and the check word, TLAST only on it.
        assert len(words) == spec.out_words(n) + 1 == spec.out_packet_words(n)
        assert [last for _, last in words] == [0] * (len(words) - 1) + [1]
        data = np.array([w for w, _ in words[:-1]], dtype="<u4")
        assert words[-1][0] == zlib.crc32(data.tobytes())  # the check word, as the host recomputes it
        got = reference_unpack([w for w, _ in words], n * spec.n_out, spec.out_lane, spec.out_format)
        shape = CASES[spec_name(hls_model)][0]
        want = hls_model.predict(np.ascontiguousarray(spec.in_format.to_float(raw).reshape(n, *shape)))
        want_raw = spec.out_format.quantize(np.asarray(want, dtype=np.float64).reshape(n, spec.n_out))
        np.testing.assert_array_equal(got.reshape(n, spec.n_out), want_raw)


def test_padding_lanes_of_the_last_word_are_ignored(built, tmp_path):
    spec, _, exe, _ = built
    raw = _inputs(spec, 3, seed=5)
    clean = reference_pack(raw, spec.in_lane)
    dirty = list(clean)
    used = (3 * spec.n_in) % (32 // spec.in_lane)
    if used == 0:
        pytest.skip("this shape fills its last input word exactly")
    dirty[-1] |= (0xFFFFFFFF << (used * spec.in_lane)) & 0xFFFFFFFF
    _, clean_out = run_tb(exe, [clean], tmp_path)
    proc, dirty_out = run_tb(exe, [dirty], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert dirty_out == clean_out


def test_a_batch_cut_inside_a_sample_still_closes_the_output_packet(built, tmp_path):
    """A DMA transfer that ends inside a sample must not hang the S2MM side: the wrapper finishes that
    sample on zero lanes, raises TLAST, and does not read into the next batch."""
    spec, _, exe, _ = built
    whole = reference_pack(_inputs(spec, 4, seed=9), spec.in_lane)
    per = 32 // spec.in_lane
    ends_inside = [w for w in range(1, len(whole)) if spec.in_words((w - 1) * per // spec.n_in + 1) != w]
    if not ends_inside:
        pytest.skip("with this shape every word count is whole samples plus padding")
    cut_at = ends_inside[0]
    samples = (cut_at - 1) * per // spec.n_in + 1
    proc, outs = run_tb(exe, [whole[:cut_at], whole], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"end inside sample {samples - 1}" in proc.stdout
    assert len(outs) == 2
    assert [last for _, last in outs[0]] == [0] * spec.out_words(samples) + [1]
    # The batch after the cut one is intact: same words as when it is sent alone.
    _, alone = run_tb(exe, [whole], tmp_path)
    assert outs[1] == alone[0]


def test_generated_sources_name_the_core_and_formats(built):
    spec, _, _, root = built
    src = next(root.glob("*/ip/lepton_accel.cpp")).read_text()
    hdr = next(root.glob("*/ip/lepton_accel.h")).read_text()
    assert "#pragma HLS INTERFACE axis port=in_stream" in src
    assert "#pragma HLS INTERFACE ap_ctrl_none port=return" in src
    assert "typedef ap_axiu<32, 0, 0, 0> axis_word_t;" in hdr
    assert f"#define LEPTON_IN_LANE {spec.in_lane}" in hdr
    assert f"#define LEPTON_N_OUT {spec.n_out}" in hdr
    if spec.io_stream:
        # 6x6 pixels of 2 channels in, one beat of 4 out: literal FIFO depths of one sample's beats
        assert (spec.in_beat, spec.out_beat) == (2, 4)
        assert "depth=36" in hdr and "depth=1" in hdr and "myproject(core_in, core_out)" in hdr
    else:
        assert "myproject(x, y)" in hdr


def test_mismatched_manifest_is_refused(built, tmp_path):
    """A manifest whose input size is not the core's: refused when the header says the size (io_parallel),
    at compile time otherwise (io_stream beats)."""
    spec, _, _, root = built
    pkg = next(p for p in root.iterdir() if (p / "manifest.json").exists())
    manifest = Manifest.from_dict(__import__("json").loads((pkg / "manifest.json").read_text()))
    manifest.inputs[0] = TensorSpec("x", (spec.n_in + 1,), spec.in_format)
    if not spec.io_stream:
        with pytest.raises(ip_wrapper.IpGenerationError, match="disagree"):
            ip_wrapper.wrapper_spec(manifest, pkg / "hls")
        return
    wrong = ip_wrapper.wrapper_spec(manifest, pkg / "hls")
    ip = ip_wrapper.generate_ip(wrong, tmp_path / "ip")
    with pytest.raises(ip_wrapper.CsimBuildError, match="whole stream beats"):
        ip_wrapper.build_csim(ip, pkg / "hls", tmp_path / "tb", syntax_only=True)


def test_manifest_width_mismatch_is_caught_at_compile_time(built, tmp_path):
    """The generated static_asserts tie the manifest's formats to the core's C types."""
    spec, _, _, root = built
    if spec.in_lane != 8:
        pytest.skip("one shape is enough for a compile-time check")
    pkg = next(p for p in root.iterdir() if (p / "manifest.json").exists())
    wrong = ip_wrapper.WrapperSpec(**{**spec.__dict__, "in_format": FixedFormat(spec.in_format.width + 1, 4)})
    ip = ip_wrapper.generate_ip(wrong, tmp_path / "ip")
    with pytest.raises(ip_wrapper.CsimBuildError, match="input width differs"):
        ip_wrapper.build_csim(ip, pkg / "hls", tmp_path / "tb", syntax_only=True)
    ip_wrapper.build_csim(ip_wrapper.generate_ip(spec, tmp_path / "ok"), pkg / "hls", tmp_path / "tb", syntax_only=True)


def test_lane_widths_follow_the_spec():
    assert [ip_wrapper.lane_bits(w) for w in (1, 8, 9, 16, 17, 32)] == [8, 8, 16, 16, 32, 32]
    with pytest.raises(ip_wrapper.IpGenerationError):
        ip_wrapper.lane_bits(33)


def test_pack_words_follows_the_spec():
    rng = np.random.RandomState(3)
    for lane in (8, 16, 32):
        raw = rng.randint(-(1 << (lane - 1)), 1 << (lane - 1), size=(5, 7)).astype(np.int64)
        assert ip_wrapper.pack_words(raw, lane).tolist() == reference_pack(raw, lane)


def test_host_packer_wrapper_and_host_unpacker_agree_with_hls4ml(built, tmp_path):
    """The board side's packer (lepton_host.packing) -> the IP -> its unpacker: the numbers the runtime will
    see are hls4ml's C simulation, bit for bit, for float inputs quantized as the runtime quantizes them."""
    from lepton_host import packing

    spec, hls_model, exe, _ = built
    shape = CASES[spec_name(hls_model)][0]
    n = 33
    x = np.random.RandomState(11).uniform(spec.in_format.min_value, spec.in_format.max_value, size=(n, spec.n_in))
    raw_in = spec.in_format.quantize(x)
    proc, outs = run_tb(exe, [packing.pack(raw_in, spec.in_format).tolist()], tmp_path)
    assert proc.returncode == 0, proc.stderr
    words = np.array([w for w, _ in outs[0]], dtype=np.uint32)
    assert int(words[-1]) == packing.check_word(words[:-1])
    got = packing.unpack(words[:-1], spec.out_format, n * spec.n_out).reshape(n, spec.n_out)
    want = hls_model.predict(np.ascontiguousarray(x.reshape(n, *shape)))
    np.testing.assert_array_equal(got, spec.out_format.quantize(np.asarray(want, dtype=np.float64).reshape(n, spec.n_out)))
