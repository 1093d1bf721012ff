"""Build configuration: what `lepton-hls build --config YAML` may choose, with the defaults an edge user wants.

Only the keys below are accepted; an unknown key is an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from lepton_host.errors import LeptonError

from . import boards

BACKENDS = ("Vitis", "Vivado", "VivadoAccelerator")
IO_TYPES = ("io_parallel", "io_stream")
STRATEGIES = ("Latency", "Resource", "distributed_arithmetic")

# Board -> (FPGA part, default HLS clock in ns), from the one board table (lepton_hls.boards).
BOARDS = {b.name: (b.part, b.hls_clock_ns) for b in boards.table().values()}
DEFAULT_PART, DEFAULT_CLOCK_NS = BOARDS[boards.DEFAULT]


class ConfigError(LeptonError):
    """The build configuration (YAML or command-line options) is invalid."""


@dataclass(frozen=True)
class BuildConfig:
    backend: str = "Vitis"
    board: str | None = None
    part: str = DEFAULT_PART
    clock_ns: float = DEFAULT_CLOCK_NS
    io_type: str = "io_parallel"
    strategy: str = "Latency"
    reuse_factor: int = 1
    project_name: str = "myproject"
    # Input precision: the grid the accelerator samples its inputs on.
    input_precision: str = "ap_fixed<16,6>"
    # "auto": exact types derived from the quantizers and the weights; otherwise one ap type for every layer
    # whose type no quantizer fixes.
    default_precision: str = "auto"
    # Per-layer overrides: {layer_name: {result: ..., accum: ..., weight: ..., bias: ...}}.
    layer_precision: dict = field(default_factory=dict)
    # Softmax lookup tables: 2**softmax_table_bits entries; the normalised input keeps that many bits.
    softmax_table_bits: int = 12
    softmax_implementation: str = "stable"
    # Other lookup-table activations (sigmoid, tanh, elu, softplus, ...): 2**table_bits entries (hls4ml: 1024,
    # whose dead zone around 0 flips about 0.5% of sigmoid decisions on a small binary classifier).
    table_bits: int = 12
    # Float (unquantized) models: fixed-point widths chosen by profiling this many samples. 14 bits keeps the
    # example float models above 99.9% argmax agreement; 18 bits costs more logic for no measurable gain and
    # makes accumulators (about 40 bits) wider than the open-source RTL path reproduces exactly.
    profile_samples: int = 2000
    profile_width: int = 14

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend {self.backend!r} is not supported; choose one of {', '.join(BACKENDS)}")
        if self.io_type not in IO_TYPES:
            raise ConfigError(f"io_type {self.io_type!r} is not supported; choose one of {', '.join(IO_TYPES)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy {self.strategy!r} is not supported; choose one of {', '.join(STRATEGIES)}")
        if self.board is not None and self.board not in BOARDS:
            raise ConfigError(f"board {self.board!r} is not supported; choose one of {', '.join(BOARDS)}")
        if not (isinstance(self.reuse_factor, int) and self.reuse_factor >= 1):
            raise ConfigError(f"reuse_factor must be a positive integer, got {self.reuse_factor!r}")
        if not self.clock_ns > 0:
            raise ConfigError(f"clock_ns must be positive, got {self.clock_ns!r}")
        if not 6 <= self.softmax_table_bits <= 16:
            raise ConfigError("softmax_table_bits must lie in 6..16 (64 to 65536 table entries)")
        if not (isinstance(self.table_bits, int) and 6 <= self.table_bits <= 16):
            raise ConfigError("table_bits must lie in 6..16 (64 to 65536 table entries)")
        if self.softmax_implementation not in ("stable", "latency"):
            raise ConfigError("softmax_implementation must be 'stable' or 'latency'")
        if self.board == "pynq-z2" and self.backend == "Vitis":
            # hls4ml's PYNQ-Z2 flow (AXI DMA block design) lives in the VivadoAccelerator backend.
            object.__setattr__(self, "backend", "VivadoAccelerator")

    @property
    def hls4ml_board(self) -> str | None:
        return self.board if self.backend == "VivadoAccelerator" else None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def load_config(path: str | Path | None = None, **overrides) -> BuildConfig:
    """Defaults <- YAML file <- command-line overrides (None means 'not given')."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        values.update(data)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(BuildConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    board = values.get("board")
    if board in BOARDS:
        part, clock = BOARDS[board]
        values.setdefault("part", part)
        values.setdefault("clock_ns", clock)
    try:
        return BuildConfig(**values)
    except TypeError as e:
        raise ConfigError(f"invalid config: {e}") from None


__all__ = ["BOARDS", "BuildConfig", "ConfigError", "load_config", "replace"]
