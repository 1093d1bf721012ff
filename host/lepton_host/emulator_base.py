"""What every emulator shares: the ports read from a package, and the `Emulator` interface (quantize the
inputs as the C simulation does, run raw integers). The C-simulation, fast-engine and RTL emulators build on it;
none of them imports another."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import EmulationError, InputShapeError
from .fixedpoint import FixedFormat
from .manifest import TensorSpec, load_manifest

CSIM_LIB = Path("emulation") / "csim.so"
# What the C simulation loads: its library (and anything beside it: it looks for emulation/weights first) and the
# weight text files it reads at its first call.
CSIM_FILES = (f"{CSIM_LIB.parent.as_posix()}/", "hls/firmware/weights/")
ENGINE_DIR = Path("engine")
GRAPH_NAME = "graph.json"
ENGINES = ("fast", "csim", "rtl")


# The ports are the manifest's own tensor specs: one type for the shape and format on the wire.
PortSpec = TensorSpec


def read_ports(package_dir: str | os.PathLike, verify: tuple[str, ...] = ()) -> tuple[PortSpec, PortSpec]:
    """The input and output ports: from `manifest.json` when the package has one (checking the sha256 of the
    artifacts under the `verify` paths), else from the engine graph (a package being assembled has the graph
    before its manifest)."""
    root = Path(package_dir)
    if (root / "manifest.json").is_file():
        m = load_manifest(root, verify=bool(verify), only=list(verify) or None)
        return m.input, m.output
    graph_path = root / ENGINE_DIR / GRAPH_NAME
    if not graph_path.is_file():
        raise EmulationError(f"{root}: neither manifest.json nor {ENGINE_DIR / GRAPH_NAME} found; not a package")
    graph = json.loads(graph_path.read_text())
    by_name = {layer["name"]: layer for layer in graph["layers"]}
    ports = []
    for name in (graph["inputs"][0], graph["outputs"][0]):
        layer = by_name[name]
        ports.append(PortSpec(name, tuple(layer["shape"]), FixedFormat.from_dict(layer["format"])))
    return ports[0], ports[1]


class Emulator:
    """What both emulators offer. Subclasses implement `predict_raw`; `predict` quantizes the inputs exactly as
    the C simulation's double-to-ap_fixed conversion does."""

    name = "emulator"
    input: PortSpec
    output: PortSpec

    def predict(self, x) -> np.ndarray:
        x = self._check_batch(x)
        return self.output.format.to_float(self.predict_raw(self.input.format.quantize(x)))

    def predict_raw(self, raw_in) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _check_batch(self, x) -> np.ndarray:
        x = np.asarray(x)
        shape = self.input.shape
        if x.shape[1:] != shape:
            if x.ndim >= 1 and x.size % self.input.size == 0 and x.ndim == 2 and x.shape[1] == self.input.size:
                x = x.reshape((x.shape[0],) + shape)
            else:
                raise InputShapeError(
                    f"{self.name} emulator: batch of shape {x.shape} does not match the input "
                    f"{self.input.name} of shape (N, {', '.join(map(str, shape))})"
                )
        return x
