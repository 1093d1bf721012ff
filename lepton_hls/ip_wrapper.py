"""The AXI4-Stream accelerator IP of a package: the packed-word wrapper around its hls4ml core.

The wrapper is rendered per package from `ip/hls/lepton_accel.{h,cpp}.tmpl` into `<package>/ip/`, using the
core's C signature (read from the hls4ml project's `firmware/<project>.h`) and the wire formats of the
package manifest; the wire format itself (lane widths, the output check word's CRC) is taken from
`lepton_host.packing`, the one definition the host runtime uses too. `build_csim` compiles it with plain g++,
together with the C++ testbench in `sim/csim/`, the package's hls4ml firmware and the `ap_types/` headers
hls4ml ships, so the wrapper is checked without vendor tools.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from string import Template

from lepton_host import packing
from lepton_host.errors import LeptonError
from lepton_host.fixedpoint import FixedFormat
from lepton_host.manifest import Manifest

from . import resources

TEMPLATE_DIR = resources.path("ip", "hls")
CSIM_HEADER_DIR = TEMPLATE_DIR / "csim"
TESTBENCH = resources.path("sim", "csim", "tb_lepton_accel.cpp")

ACCEL_NAME = "lepton_accel"
WORD_BITS = packing.WORD_BITS


class IpGenerationError(LeptonError):
    """The stream wrapper cannot be generated for this package (unsupported core interface or formats)."""


class CsimBuildError(LeptonError):
    """The C simulation of the stream wrapper did not compile."""


def lane_bits(width: int) -> int:
    """Lane width on the wire for a fixed-point format of `width` bits."""
    if width <= packing.MAX_WIRE_WIDTH:
        return packing.lane_bits_for_width(width)
    raise IpGenerationError(f"a {width}-bit value does not fit a 32-bit stream lane; narrow the precision to <= 32 bits")


@dataclass(frozen=True)
class CorePort:
    c_type: str  # io_parallel: the scalar type; io_stream: the nnet::array beat type
    name: str
    count: int | None  # io_parallel: array length; io_stream: unknown here (checked at compile time)
    stream: bool = False
    beat: int | None = None  # io_stream: values per stream beat (K of nnet::array<T, K>)


@dataclass(frozen=True)
class CoreSignature:
    """`void core(in_t in[N], out_t out[M])` (io_parallel) or
    `void core(hls::stream<in_t> &in, hls::stream<out_t> &out)` (io_stream), hls4ml's top function."""

    function: str
    inputs: tuple[CorePort, ...]
    outputs: tuple[CorePort, ...]


_FUNC_RE = re.compile(r"void\s+(\w+)\s*\(([^)]*)\)\s*;", re.S)
_ARRAY_ARG_RE = re.compile(r"^\s*([\w:<>, ]+?)\s+(\w+)\s*\[\s*([\w\s*]+?)\s*\]\s*$")
_STREAM_ARG_RE = re.compile(r"^\s*hls::stream\s*<\s*(\w+)\s*>\s*&\s*(\w+)\s*$")
_DEFINE_RE = re.compile(r"^\s*#define\s+(\w+)\s+(\d+)\s*$", re.M)


def read_core_signature(hls_dir: str | Path, project_name: str = "myproject") -> CoreSignature:
    """Parse the top function prototype hls4ml writes into `firmware/<project>.h`."""
    firmware = Path(hls_dir) / "firmware"
    header = firmware / f"{project_name}.h"
    if not header.is_file():
        raise IpGenerationError(f"{header} not found: the package's hls/ directory is not an hls4ml project")
    text = header.read_text()
    match = next((m for m in _FUNC_RE.finditer(text) if m.group(1) == project_name), None)
    if match is None:
        raise IpGenerationError(f"no prototype of {project_name}() in {header}")
    defines = {}
    defines_h = firmware / "defines.h"
    if defines_h.is_file():
        defines = {k: int(v) for k, v in _DEFINE_RE.findall(defines_h.read_text())}
    args = [a for a in _split_args(match.group(2)) if a.strip()]
    ports = []
    for arg in args:
        ms = _STREAM_ARG_RE.match(arg)
        if ms is not None:
            ports.append(CorePort(c_type=ms.group(1), name=ms.group(2), count=None, stream=True))
            continue
        m = _ARRAY_ARG_RE.match(arg)
        if m is None:
            raise IpGenerationError(f"{header}: cannot read argument {arg.strip()!r} of {project_name}()")
        c_type, name, size = m.groups()
        count = _array_size(size, defines)
        if count is None:
            raise IpGenerationError(
                f"{header}: array size {size} of {name} is not a number, a #define in defines.h or a product of them"
            )
        ports.append(CorePort(c_type=" ".join(c_type.split()), name=name, count=count))
    # hls4ml lists inputs first, then outputs; the io_parallel top function has no other arguments.
    if len(ports) == 2 and ports[0].stream != ports[1].stream:
        raise IpGenerationError(f"{header}: {project_name}() mixes stream and array arguments")
    if len(ports) != 2:
        raise IpGenerationError(
            f"{project_name}() has {len(ports)} array arguments; the stream wrapper handles one input and one output"
        )
    if ports[0].stream:
        # The beat size K of nnet::array<T, K>, so the wrapper's internal FIFOs get literal depths.
        text = defines_h.read_text() if defines_h.is_file() else ""
        ports = [CorePort(p.c_type, p.name, None, True, _beat_size(text, p.c_type, defines)) for p in ports]
    return CoreSignature(function=project_name, inputs=(ports[0],), outputs=(ports[1],))


def _beat_size(defines_text: str, type_name: str, defines: dict[str, int]) -> int | None:
    m = re.search(rf"typedef\s+nnet::array<.*,\s*([\w\s*]+?)\s*>\s+{re.escape(type_name)}\s*;", defines_text)
    return _array_size(m.group(1), defines) if m else None


def _array_size(expr: str, defines: dict[str, int]) -> int | None:
    """`16`, `N_INPUT_1_1` or `N_INPUT_1_1*N_INPUT_2_1*N_INPUT_3_1` (hls4ml writes all three forms)."""
    total = 1
    for factor in expr.split("*"):
        factor = factor.strip()
        value = int(factor) if factor.isdigit() else defines.get(factor)
        if value is None:
            return None
        total *= value
    return total


def _split_args(text: str) -> list[str]:
    """Split on commas outside template brackets (`ap_fixed<16,6> x[16]` is one argument)."""
    depth, cur, out = 0, [], []
    for ch in text:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


@dataclass(frozen=True)
class WrapperSpec:
    """Everything the templates need: names, counts, C types and the wire formats."""

    accel: str
    core: str
    n_in: int
    n_out: int
    in_type: str
    out_type: str
    in_format: FixedFormat
    out_format: FixedFormat
    io_stream: bool = False
    in_beat: int | None = None
    out_beat: int | None = None

    @property
    def in_lane(self) -> int:
        return lane_bits(self.in_format.width)

    @property
    def out_lane(self) -> int:
        return lane_bits(self.out_format.width)

    def in_words(self, batch: int) -> int:
        per = WORD_BITS // self.in_lane
        return -(-batch * self.n_in // per)

    def out_words(self, batch: int) -> int:
        """Data words of a batch's output packet (the check word follows them)."""
        per = WORD_BITS // self.out_lane
        return -(-batch * self.n_out // per)

    def out_packet_words(self, batch: int) -> int:
        return self.out_words(batch) + packing.CHECK_WORDS

    def template_values(self) -> dict[str, str]:
        return {
            "accel": self.accel,
            "guard": f"{self.accel.upper()}_H_",
            "core": self.core,
            "n_in": str(self.n_in),
            "n_out": str(self.n_out),
            "in_width": str(self.in_format.width),
            "out_width": str(self.out_format.width),
            "in_lane": str(self.in_lane),
            "out_lane": str(self.out_lane),
            "in_signed": str(int(self.in_format.signed)),
            "out_signed": str(int(self.out_format.signed)),
            "in_type": self.in_type,
            "out_type": self.out_type,
            "io_stream": str(int(self.io_stream)),
            # FIFO depths inside the io_stream adapter: one sample's beats (an upper bound if K is unknown)
            "in_fifo_depth": str(self.n_in // self.in_beat if self.in_beat else self.n_in),
            "out_fifo_depth": str(self.n_out // self.out_beat if self.out_beat else self.n_out),
            "crc_poly": f"0x{packing.CRC32_POLY_REFLECTED:08X}",
            "crc_init": f"0x{packing.CRC32_INIT:08X}",
            "crc_xorout": f"0x{packing.CRC32_XOROUT:08X}",
        }


def wrapper_spec(manifest: Manifest, hls_dir: str | Path, accel: str = ACCEL_NAME) -> WrapperSpec:
    """Check the manifest against the core's signature and derive the wrapper's parameters."""
    if len(manifest.inputs) != 1 or len(manifest.outputs) != 1:
        raise IpGenerationError(
            f"the package has {len(manifest.inputs)} inputs and {len(manifest.outputs)} outputs; the stream "
            "wrapper handles models with one input and one output tensor"
        )
    sig = read_core_signature(hls_dir, manifest.hls.project_name)
    tin, tout = manifest.input, manifest.output
    cin, cout = sig.inputs[0], sig.outputs[0]
    if not cin.stream and (cin.count != tin.size or cout.count != tout.size):
        raise IpGenerationError(
            f"the core {sig.function}() takes {cin.count} inputs and gives {cout.count} outputs but the manifest "
            f"declares {tin.size} and {tout.size}: the package's hls/ project and manifest.json disagree"
        )
    spec = WrapperSpec(
        accel=accel,
        core=sig.function,
        n_in=tin.size if cin.stream else cin.count,
        n_out=tout.size if cout.stream else cout.count,
        in_type=cin.c_type,
        out_type=cout.c_type,
        in_format=tin.format,
        out_format=tout.format,
        io_stream=cin.stream,
        in_beat=cin.beat,
        out_beat=cout.beat,
    )
    per_word = WORD_BITS // spec.in_lane
    if spec.n_in < per_word:
        raise IpGenerationError(
            f"an input sample of {spec.n_in} {spec.in_lane}-bit lanes is smaller than one 32-bit word: with TLAST "
            "ending the batch, padding lanes could not be told from another sample; widen the input precision "
            f"to {WORD_BITS // spec.n_in if spec.n_in else WORD_BITS} bits or more"
        )
    return spec


@dataclass(frozen=True)
class IpSources:
    directory: Path
    header: Path
    source: Path
    testbench: Path
    csim_headers: Path

    @property
    def files(self) -> list[Path]:
        return [self.header, self.source, self.testbench, *sorted(self.csim_headers.glob("*.h"))]


def render(template: str, values: dict[str, str]) -> str:
    return Template((TEMPLATE_DIR / template).read_text()).substitute(values)


def generate_ip(spec: WrapperSpec, out_dir: str | Path) -> IpSources:
    """Write the wrapper, its csim-only headers and the testbench into `out_dir` (normally `<package>/ip/`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    values = spec.template_values()
    header = out / f"{spec.accel}.h"
    source = out / f"{spec.accel}.cpp"
    header.write_text(render("lepton_accel.h.tmpl", values))
    source.write_text(render("lepton_accel.cpp.tmpl", values))
    csim = out / "csim"
    csim.mkdir(exist_ok=True)
    for h in CSIM_HEADER_DIR.glob("*.h"):
        shutil.copyfile(h, csim / h.name)
    tb = out / TESTBENCH.name
    # The testbench includes "lepton_accel.h"; a wrapper under another name gets a forwarding header.
    shutil.copyfile(TESTBENCH, tb)
    if spec.accel != ACCEL_NAME:
        (csim / f"{ACCEL_NAME}.h").write_text(
            f'#include "{spec.accel}.h"\n#define lepton_accel {spec.accel}\n'
        )
    return IpSources(directory=out, header=header, source=source, testbench=tb, csim_headers=csim)


def build_csim(ip: IpSources, hls_dir: str | Path, exe: str | Path, project_name: str = "myproject",
               syntax_only: bool = False) -> Path:  # fmt: skip
    """Compile testbench + wrapper + hls4ml firmware with g++ into `exe`. With `syntax_only`, only check
    that the wrapper compiles against the core's header (its static_asserts included), in about a second."""
    hls = Path(hls_dir).resolve()
    firmware = hls / "firmware"
    gxx = shutil.which("g++")
    if gxx is None:
        raise CsimBuildError("g++ not found on PATH: install a C++ compiler (e.g. apt-get install g++)")
    exe = Path(exe)
    cmd = [
        gxx, "-std=c++14", "-O2",
        f"-I{ip.directory}", f"-I{ip.csim_headers}", f"-I{firmware}", f"-I{firmware / 'ap_types'}",
        f'-DWEIGHTS_DIR="{firmware / "weights"}"',
    ]  # fmt: skip
    if syntax_only:
        cmd += ["-fsyntax-only", str(ip.source)]
    else:
        cmd += [str(ip.testbench), str(ip.source), str(firmware / f"{project_name}.cpp"), "-o", str(exe)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise CsimBuildError("g++ did not finish building the wrapper's C simulation within 600 s") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise CsimBuildError(f"g++ failed to build the wrapper's C simulation ({' '.join(cmd[:3])} ...):\n{tail}")
    return exe


class CsimMismatchError(LeptonError):
    """The stream wrapper's C simulation disagrees with the core it wraps (or its TLAST is misplaced)."""


def pack_words(raw, lane: int):
    """Raw integers (sample-major) -> 32-bit stream words, by the wire rules of docs/package-layout.md."""
    import numpy as np

    # Lane-wide two's complement carries any raw value of a format no wider than the lane, signed or not.
    raw = np.asarray(raw, dtype=np.int64) & ((1 << lane) - 1)
    return packing.pack(raw, FixedFormat(lane, lane, signed=False))


@dataclass
class CsimCheck:
    """Outcome of running the wrapper's C simulation testbench on random batches."""

    batches: list[int]
    samples: int
    identical: bool
    summary: str

    def to_dict(self) -> dict:
        return {"batches": self.batches, "samples": self.samples, "identical": self.identical, "summary": self.summary}


def check_csim(spec: WrapperSpec, ip: IpSources, hls_dir: str | Path, work_dir: str | Path,
               batches: tuple[int, ...] = (1, 7, 64), seed: int = 0, project_name: str = "myproject") -> CsimCheck:  # fmt: skip
    """Build the testbench and stream random batches (raw values over the whole input range) through the
    wrapper; the testbench checks every output word against the core and the TLAST position."""
    import numpy as np

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    exe = build_csim(ip, hls_dir, work / "tb_lepton_accel", project_name=project_name)
    rng = np.random.default_rng(seed)
    fmt = spec.in_format
    lines = []
    for n in batches:
        raw = rng.integers(fmt.raw_min, fmt.raw_max + 1, size=(n, spec.n_in), dtype=np.int64)
        words = pack_words(raw, spec.in_lane)
        lines.append(f"batch {len(words)}")
        lines.extend(f"{int(w):08x}" for w in words)
    src, dst = work / "in_words.txt", work / "out_words.txt"
    src.write_text("\n".join(lines) + "\n")
    try:
        proc = subprocess.run([str(exe), str(src), str(dst)], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise CsimMismatchError(f"the stream wrapper's C simulation {exe} did not finish within 600 s") from None
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0:
        detail = "\n  ".join(proc.stderr.strip().splitlines()[:8])
        raise CsimMismatchError(f"the stream wrapper's C simulation failed ({summary or 'no summary'}):\n  {detail}")
    return CsimCheck(batches=list(batches), samples=int(sum(batches)), identical=True, summary=summary)
