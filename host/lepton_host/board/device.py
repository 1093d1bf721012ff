"""`EmulatedBoard`: a `pynq.Device` that stands in for a PYNQ-Z2 on any machine.

pynq finds it through its own device probe (`DeviceMeta`: `_probe_priority_`, `_probe_`), but only after
`lepton_host.board.enable()` switched it on, so it never shadows a real board. From then on the unmodified
`pynq.Overlay`, `pynq.allocate`, `pynq.lib.dma.DMA` and `MMIO` drive it:

- `allocate()` returns real `PynqBuffer`s over host memory, each with its own physical address;
- `mmap()` hands MMIO a numpy view of a register file (the `MEMORY_MAPPED` path a real board takes), so
  register access costs what it costs on the board and a benchmark measures the host, not this emulation;
- `download()` reads the overlay's .hwh and wires each AXI DMA to the stream accelerator it feeds; the
  accelerator's arithmetic runs on whatever bit-exact model was attached (`attach`).

`inject()` makes it fail the way boards fail (see faults.py) until `clear()`.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
import weakref

import numpy as np
from pynq.buffer import PynqBuffer
from pynq.pl_server.device import Device
from pynq.pl_server.hwh_parser import get_hwh_name

from ..compat.pynq import forget_probed_devices, zynq_hwh_parser
from ..axi_dma_registers import SR_SLV_ERR
from .dma import AxiDmaModel
from .faults import Fault, FaultKind
from .stream_ip import StreamIP

CMA_BASE = 0x16000000  # where PYNQ-Z2's contiguous memory pool starts
PAGE = 4096


def forget_probe() -> None:
    """Make pynq probe again on next use (its device list and active device are cached on the class)."""
    forget_probed_devices(Device, EmulatedBoard)


class EmulatedBoard(Device):
    _probe_priority_ = 7  # below EmbeddedDevice (50) and XRT (100): when switched on, it is the default
    _enabled = False
    _instance: EmulatedBoard | None = None

    @classmethod
    def _probe_(cls):
        if not cls._enabled:
            return []
        board = cls.instance()
        return [] if board.missing else [board]

    @classmethod
    def instance(cls) -> EmulatedBoard:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        super().__init__("emulated_pynq_z2")
        self.name = "Pynq-Z2 (emulated)"
        self.capabilities = {"MEMORY_MAPPED": True, "REGISTER_RW": False, "CALLABLE": False}
        self.timestamp = ""
        self.bitfile_name = None
        self.downloads = 0  # bitstream downloads since power-up (each one resets the accelerator)
        # Host time spent emulating what a real board does in hardware (the DMA moving data, the stream
        # conversion, the model), counted inside the LENGTH register writes: benchmarks subtract it to see the
        # host's own cost.
        self.fabric_seconds = 0.0
        self.last_error = ""
        self.clocks: dict = {}
        self.faults: dict[FaultKind, Fault] = {}
        self._dmas: dict[int, AxiDmaModel] = {}
        self._ip_for: dict[str, StreamIP] = {}
        self._computes: dict[str | None, object] = {}
        self._plain_regs: dict[tuple[int, int], np.ndarray] = {}
        self._regions: dict[int, tuple] = {}  # physical address -> (weakref to storage, nbytes, offset)
        self._starts: list[int] = []
        self._next_addr = CMA_BASE
        # Re-entrant: a garbage collection that runs while the lock is held (any allocation can start one) may
        # call `_release` for a buffer that died, on this same thread; a plain Lock would deadlock there.
        self._lock = threading.RLock()

    # ---- models --------------------------------------------------------------------------------------------
    def attach(self, compute, model_sha256: str | None = None) -> None:
        """Serve the accelerator of `model_sha256` (every accelerator when None) with `compute`, any object
        with `predict_raw(raw int64 (N, *in_shape)) -> raw int64 (N, *out_shape)`."""
        if not callable(getattr(compute, "predict_raw", None)):
            raise TypeError(f"{compute!r} has no predict_raw(raw) method")
        self._computes[model_sha256] = compute

    def detach(self, model_sha256: str | None = None) -> None:
        self._computes.pop(model_sha256, None)

    # ---- faults ------------------------------------------------------------------------------------------
    @property
    def missing(self) -> bool:
        return FaultKind.MISSING in self.faults

    def inject(self, kind: str | FaultKind, **params) -> Fault:
        fault = Fault.of(kind, **params)
        self.faults[fault.kind] = fault
        if fault.kind is FaultKind.MISSING:
            for dma in self._dmas.values():
                dma.disappear()
            forget_probe()
        return fault

    def clear(self, kind: str | FaultKind | None = None) -> None:
        kinds = list(self.faults) if kind is None else [FaultKind(kind)]
        for k in kinds:
            if self.faults.pop(k, None) is not None and k is FaultKind.MISSING:
                for dma in self._dmas.values():
                    dma.reappear()
                forget_probe()

    # ---- memory ------------------------------------------------------------------------------------------
    def allocate(self, shape, dtype="u4", **kwargs):
        dtype = np.dtype(dtype)
        shape = (shape,) if np.isscalar(shape) else tuple(shape)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        storage = np.zeros(nbytes + 64, dtype=np.uint8)
        offset = (-storage.ctypes.data) % 64
        with self._lock:
            addr = self._next_addr
            self._next_addr += -(-nbytes // PAGE) * PAGE
            self._regions[addr] = (weakref.ref(storage), nbytes, offset)
            bisect.insort(self._starts, addr)
            weakref.finalize(storage, self._release, addr)
        return PynqBuffer(
            shape, dtype, buffer=storage, offset=offset, device=self, device_address=addr, bo=addr, coherent=False
        )

    def _release(self, addr: int) -> None:
        with self._lock:
            if self._regions.pop(addr, None) is not None:
                i = bisect.bisect_left(self._starts, addr)
                if i < len(self._starts) and self._starts[i] == addr:
                    self._starts.pop(i)

    def memory_view(self, addr: int, nbytes: int) -> np.ndarray | None:
        """uint8 view of emulated DDR at a physical address, or None where nothing is allocated (the DMA
        then reports a decode error, as the interconnect would)."""
        region = self._regions.get(addr)
        start = addr
        if region is None:
            i = bisect.bisect_right(self._starts, addr) - 1
            if i < 0:
                return None
            start = self._starts[i]
            region = self._regions.get(start)
            if region is None:
                return None
        ref, size, offset = region
        storage = ref()
        lo = addr - start
        if storage is None or lo + nbytes > size:
            return None
        return storage[offset + lo : offset + lo + nbytes]

    def flush(self, bo, offset, ptr, size):
        pass  # host and emulated DMA share one coherent memory

    def invalidate(self, bo, offset, ptr, size):
        pass

    # ---- registers ---------------------------------------------------------------------------------------
    def mmap(self, base_addr, length):
        dma = self._dmas.get(base_addr)
        if dma is not None:
            return dma.regs
        key = (base_addr, length)
        if key not in self._plain_regs:
            self._plain_regs[key] = np.zeros(length // 4, dtype=np.uint32)
        return self._plain_regs[key]

    # ---- bitstreams --------------------------------------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name: str, partial: bool = False):
        hwh = get_hwh_name(bitfile_name)
        if not os.path.isfile(hwh):
            raise RuntimeError(
                f"the emulated board needs the hardware handoff {hwh} beside {bitfile_name}; generate it with "
                "lepton_host.board.write_overlay(manifest, dir)"
            )
        parser = zynq_hwh_parser(hwh)
        # The PS clock registers do not exist here; remember what the design asked for instead.
        self.clocks = parser.clock_dict
        parser.clock_dict = {}
        parser.systemgraph = None
        return parser

    def download(self, bitstream, parser=None):
        if self.missing:
            raise RuntimeError("emulated board: no device answers (fault 'missing' injected)")
        if parser is None:
            parser = self.get_bitfile_metadata(bitstream.bitfile_name)
        ips = {}
        for full, vlnv, pars, _regs, _bd in parser.instance2attr.values():
            params = {p.get("NAME"): p.get("VALUE") for p in pars}
            if "C_STREAM" in params:
                ips[params["C_DMA"]] = StreamIP.from_parameters(full, params)
        if not ips:
            raise RuntimeError(
                f"{bitstream.bitfile_name}: its .hwh describes no lepton-hls stream accelerator (no C_STREAM "
                "parameter); the emulated board serves only overlays written by lepton_host.board.write_overlay"
            )
        for dma_path in ips:
            desc = parser.ip_dict.get(dma_path)
            if desc is None:
                raise RuntimeError(f"{bitstream.bitfile_name}: accelerator fed by {dma_path}, which is not in the .hwh")
            base = desc["phys_addr"]
            dma = self._dmas.get(base)
            if dma is None:
                dma = self._dmas[base] = AxiDmaModel(dma_path, base, desc["addr_range"], self)
            dma.name = dma_path
            dma._reset()  # configuring the fabric resets everything in it
        self._ip_for = ips
        self.downloads += 1
        super().post_download(bitstream, parser, self.name)

    def accept_packet(self, dma: AxiDmaModel, words: np.ndarray, generation: int) -> None:
        """MM2S streamed `words` (TLAST on the last) into the accelerator behind `dma`."""
        ip = self._ip_for.get(dma.name)
        if FaultKind.HANG in self.faults or ip is None:
            return  # nothing ever comes back, and the send side never drains either
        if ip.samples_in(words.size) is None:
            dma.mm2s_done(generation)  # the IP took the words and now waits for the rest of a sample
            return
        compute = self._computes.get(ip.model_sha256) or self._computes.get(None)
        if compute is None:
            self.last_error = f"no model attached to the emulated accelerator {ip.name} (model {ip.model_sha256[:12]})"
            dma.mm2s_failed(generation, SR_SLV_ERR)
            return
        try:
            out = ip.process(words, compute)
        except Exception as e:  # a model that fails is a device that fails: the host sees a DMA error
            self.last_error = f"emulated accelerator {ip.name}: {type(e).__name__}: {e}"
            dma.mm2s_failed(generation, SR_SLV_ERR)
            return
        dma.mm2s_done(generation)
        ready_at = 0.0
        if (f := self.faults.get(FaultKind.SHORT)) is not None:
            out = out[: min(out.size - 1, int(out.size * f.keep_fraction))] if out.size else out
        if (f := self.faults.get(FaultKind.CORRUPT)) is not None:
            out = out.copy()
            out[:: max(1, f.every)] ^= np.uint32(f.xor_mask)
        if (f := self.faults.get(FaultKind.SLOW)) is not None:
            ready_at = time.perf_counter() + f.delay_s
        dma.push_packet(out, generation, ready_at)

    def close(self):
        pass

    def dma(self, path: str | None = None) -> AxiDmaModel:
        """The emulated DMA (by .hwh path), for tests that look at what crossed the bus."""
        for d in self._dmas.values():
            if path is None or d.name == path:
                return d
        raise KeyError(path)
