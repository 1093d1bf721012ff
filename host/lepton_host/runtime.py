"""The board runtime: one overlay package, one accelerator, numpy arrays in and out.

    acc = Accelerator.load("packages/jet_tagger")   # checksums, overlay, contiguous buffers: once
    y = acc.predict(x)                               # (N, *input_shape) raw features -> (N, *output_shape)
    acc.throughput_test()                            # per-stage times: pack, transfer, compute, unpack

Imports numpy and pynq only (no TensorFlow), so it runs on a stock PYNQ image. The request path programs the
AXI DMA's simple-mode registers directly through the register view pynq maps (2 reads and 4 writes a call
instead of the 14 reads and 6 writes of pynq's channel objects); pynq still loads the overlay, starts the DMA
and allocates the buffers. Every wait has a deadline: a DMA that never completes raises DeviceTimeoutError
and the DMA is reset, so the next call works once the cause is gone.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .axi_dma_registers import (
    ALL_ONES,
    CR_RESET,
    CR_RS,
    MM2S_DMACR,
    MM2S_DMASR,
    MM2S_LENGTH,
    MM2S_SA,
    MM2S_SA_MSB,
    S2MM_DA,
    S2MM_DA_MSB,
    S2MM_DMACR,
    S2MM_DMASR,
    S2MM_LENGTH,
    SR_ERRORS,
    SR_HALTED,
    SR_IDLE,
    error_kinds,
    status_names,
)
from .errors import InputShapeError, LeptonError, ManifestError
from .manifest import Manifest, load_manifest
from .packing import CHECK_WORDS, LaneDequantizer, LaneQuantizer, check_word, lane_bits, pack_into, words_for
from .selftest import SelfTestResult, golden_vectors, run_self_test

DEFAULT_MAX_BATCH = 1024
DEFAULT_TIMEOUT_S = 1.0


# DMA completion polling: a few tight polls (a batch usually completes within them), then short sleeps that
# release the GIL, growing to 1 ms, so a hung fabric never spins a core against the serving threads.
SPIN_POLLS = 64
MAX_POLL_SLEEP_S = 1e-3


class DeviceError(LeptonError):
    """The accelerator or its DMA failed; the runtime has reset the DMA and can be retried."""


class DeviceTimeoutError(DeviceError):
    """The DMA did not complete within the timeout (a hung accelerator, a missing TLAST, or too slow)."""


class ShortTransferError(DeviceError):
    """The accelerator ended its output packet (TLAST) before the whole batch came back."""


class CorruptOutputError(DeviceError):
    """Output words break the wire format (a lane's spare bits or the padding are not what the format allows)."""


class IntegrityError(CorruptOutputError):
    """The output packet's check word (CRC-32 of its data words) does not match: bits flipped between the
    accelerator and memory. The batch is never returned."""


class DmaError(DeviceError):
    """The AXI DMA reported an internal, slave or decode error in its status register."""


class DeviceMissingError(DeviceError):
    """No device answers: pynq finds no board, or the DMA's registers read back all ones."""


@dataclass
class StageTimes:
    """What `throughput_test` measured, in seconds over `samples` samples (like FINN's throughput_test)."""

    samples: int
    batch: int
    pack_s: float
    transfer_s: float
    compute_s: float
    unpack_s: float
    total_s: float
    in_bytes_per_sample: float
    out_bytes_per_sample: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.total_s if self.total_s else float("inf")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["samples_per_s"] = self.samples_per_s
        for k in ("pack_s", "transfer_s", "compute_s", "unpack_s", "total_s"):
            d[k.replace("_s", "_us_per_sample")] = 1e6 * d[k] / max(self.samples, 1)
        return d


class _Slot:
    """One input/output buffer pair; two of them let the host pack chunk k+1 while the fabric runs chunk k."""

    def __init__(self, alloc, in_words: int, out_words: int, in_lane, out_lane):
        self.inp = alloc((in_words,), np.uint32)
        self.out = alloc((out_words + CHECK_WORDS,), np.uint32)
        self.in_addr = int(self.inp.physical_address)
        self.out_addr = int(self.out.physical_address)
        self.in_np = self.inp.view(np.ndarray)  # plain ndarray views: no subclass overhead per element op
        self.out_np = self.out.view(np.ndarray)
        self.in_lanes = self.in_np.view(in_lane)
        self.out_lanes = self.out_np.view(out_lane)
        self.n = 0
        self.in_words = 0
        self.out_words = 0  # data words of the output packet; the check word follows them


class Accelerator:
    """A loaded overlay package. Not thread-safe: one caller at a time (the gateway serialises calls)."""

    def __init__(self, package_dir, manifest: Manifest, overlay, dma, device, max_batch: int, timeout_s: float):
        self.package_dir = Path(package_dir)
        self.manifest = manifest
        self.overlay = overlay
        self.dma = dma
        self.device = device
        self.timeout_s = float(timeout_s)
        self.in_shape = tuple(manifest.input.shape)
        self.out_shape = tuple(manifest.output.shape)
        self.in_size = manifest.input.size
        self.out_size = manifest.output.size
        self._pre = manifest.preprocessing
        self._identity = self._pre.kind == "identity"
        if not self._identity:
            self._mean = np.asarray(self._pre.mean, dtype=np.float64)
            self._inv_scale = 1.0 / np.asarray(self._pre.scale, dtype=np.float64)
        self._q = LaneQuantizer(manifest.input.format)
        self._dq = LaneDequantizer(manifest.output.format)
        self.in_lane_bytes = lane_bits(manifest.input.format) // 8
        self.out_lane_bytes = lane_bits(manifest.output.format) // 8
        dma_max = int(getattr(dma, "buffer_max_size", (1 << 26) - 1))
        per_sample = max(self.in_size * self.in_lane_bytes, self.out_size * self.out_lane_bytes)
        # room for the last word's padding and the output check word
        self.max_batch = max(1, min(int(max_batch), (dma_max - 4 - 4 * CHECK_WORDS) // per_sample))
        import pynq

        def alloc(shape, dtype):
            return pynq.allocate(shape, dtype, target=device)

        in_words = words_for(self.max_batch * self.in_size, manifest.input.format)
        out_words = words_for(self.max_batch * self.out_size, manifest.output.format)
        self._slots = [
            _Slot(alloc, in_words, out_words, self._q.dtype, self._dq.dtype) for _ in range(2)
        ]
        self._regs = dma.mmio.array
        self._needs_reset = False
        self.calls = 0
        self._reset_dma()

    # ---- loading --------------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        package_dir,
        *,
        device=None,
        download: bool | None = None,
        max_batch: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        bitfile: str | os.PathLike | None = None,
        dma: str | None = None,
    ) -> Accelerator:
        """Verify the package's checksums, load its overlay and allocate the DMA buffers.

        `device` is the pynq device to use (pynq's active device when None). `download` True always programs
        the bitstream, False never does (the caller knows it is loaded), None (default) programs it only when
        the device does not already hold it. `max_batch` sizes the contiguous buffers; larger batches are
        streamed through them in chunks. `bitfile` overrides the package's overlay and `dma` names the DMA
        that feeds the accelerator when the overlay holds several (default: the manifest's overlay section)."""
        package_dir = Path(package_dir)
        manifest = load_manifest(package_dir, verify=True)
        try:
            import pynq
        except ImportError as e:
            raise DeviceMissingError(
                f"pynq is not installed ({e}); install the board side with host/install.sh"
            ) from None
        if device is None:
            try:
                device = pynq.Device.active_device
            except RuntimeError as e:
                raise DeviceMissingError(
                    f"pynq finds no device ({e}); on a PYNQ board check that the FPGA manager is present, "
                    "elsewhere use the emulated board (lepton_host.board.enable())"
                ) from None
        bit = Path(bitfile) if bitfile else _find_bitstream(package_dir, manifest, device)
        bit = bit.resolve()
        if download is None:
            download = not (getattr(device, "bitfile_name", None) == str(bit) and getattr(device, "timestamp", ""))
        try:
            overlay = pynq.Overlay(str(bit), download=download, device=device)
        except (RuntimeError, OSError, ValueError) as e:
            raise DeviceError(f"cannot load overlay {bit}: {e}") from None
        dma_ip = _find_dma(overlay, manifest, dma)
        if max_batch is None:
            max_batch = manifest.overlay.max_batch if manifest.overlay else DEFAULT_MAX_BATCH
        return cls(package_dir, manifest, overlay, dma_ip, device, max_batch, timeout_s)

    # ---- inference ------------------------------------------------------------------------------------------
    def predict(self, x, timeout: float | None = None) -> np.ndarray:
        """Raw features (N, *input_shape) -> outputs (N, *output_shape) as a new float64 array."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != len(self.in_shape) + 1 or x.shape[1:] != self.in_shape:
            raise InputShapeError(
                f"{self.manifest.model.name} takes a batch of shape (N, {', '.join(map(str, self.in_shape))}); "
                f"got {x.shape}. Add the batch axis for a single sample: x[None]"
            )
        n = len(x)
        out = np.empty((n,) + self.out_shape, dtype=np.float64)
        if n == 0:
            return out
        if self._needs_reset:
            self._reset_dma()
        timeout = self.timeout_s if timeout is None else float(timeout)
        x2 = x.reshape(n, self.in_size)
        mb = self.max_batch
        if n <= mb:  # the common, latency-bound case: one chunk, one buffer pair
            slot = self._slots[0]
            self._fill(slot, x2)
            self._start(slot)
            self._finish(slot, out.reshape(-1), timeout)
        else:
            flat_out = out.reshape(n, self.out_size)
            chunks = [(i, min(i + mb, n)) for i in range(0, n, mb)]
            slots = self._slots
            self._fill(slots[0], x2[chunks[0][0] : chunks[0][1]])
            self._start(slots[0])
            for k, (lo, hi) in enumerate(chunks):
                cur = slots[k % 2]
                if k + 1 < len(chunks):  # pack the next chunk while the fabric works on this one
                    nlo, nhi = chunks[k + 1]
                    self._fill(slots[(k + 1) % 2], x2[nlo:nhi])
                self._finish(cur, flat_out[lo:hi].reshape(-1), timeout)
                if k + 1 < len(chunks):
                    self._start(slots[(k + 1) % 2])
        self.calls += 1
        return out

    __call__ = predict

    def predict_raw(self, raw, timeout: float | None = None) -> np.ndarray:
        """Raw input values (N, *input_shape) of the input format -> raw outputs (int64, N, *output_shape):
        no preprocessing, no quantization, so a caller can compare the device with known vectors bit for bit."""
        fmt = self.manifest.input.format
        raw = np.asarray(raw, dtype=np.int64)
        if raw.ndim != len(self.in_shape) + 1 or raw.shape[1:] != self.in_shape:
            raise InputShapeError(
                f"{self.manifest.model.name} takes raw batches of shape (N, *{self.in_shape}); got {raw.shape}"
            )
        if raw.size and (raw.min() < fmt.raw_min or raw.max() > fmt.raw_max):
            raise InputShapeError(f"raw inputs outside the range of {fmt} ({fmt.raw_min}..{fmt.raw_max})")
        n = len(raw)
        out = np.empty((n, self.out_size), dtype=np.float64)
        if self._needs_reset:
            self._reset_dma()
        timeout = self.timeout_s if timeout is None else float(timeout)
        slot = self._slots[0]
        for lo in range(0, n, self.max_batch):
            chunk = raw[lo : lo + self.max_batch].reshape(-1, self.in_size)
            slot.n = len(chunk)
            slot.in_words = pack_into(slot.in_np, chunk, fmt)
            slot.out_words = words_for(slot.n * self.out_size, self.manifest.output.format)
            slot.inp.flush()
            self._start(slot)
            self._finish(slot, out[lo : lo + slot.n].reshape(-1), timeout)
        # Exact: every raw value of a <= 32-bit format is a float64 times a power of two.
        return self.manifest.output.format.quantize(out).reshape((n,) + self.out_shape)

    def self_test(self) -> SelfTestResult:
        """Run the package's golden vectors through the board, bit for bit (see selftest.py)."""
        where = f"{self.manifest.model.name} on {getattr(self.device, 'name', self.device)}"
        return run_self_test(self.predict_raw, golden_vectors(self.package_dir, self.manifest), where)

    def _fill(self, slot: _Slot, x2: np.ndarray) -> None:
        if not self._identity:
            x2 = (x2 - self._mean) * self._inv_scale
        slot.n = n = len(x2)
        slot.in_words = self._q.into_lanes(slot.in_np, slot.in_lanes, x2)
        slot.out_words = -(-(n * self.out_size) // self._dq.per)
        slot.inp.flush()

    def _start(self, slot: _Slot) -> None:
        r = self._regs
        # Receive side first, so the output packet always has a place to land.
        r[S2MM_DA] = slot.out_addr
        r[S2MM_LENGTH] = (slot.out_words + CHECK_WORDS) * 4
        r[MM2S_SA] = slot.in_addr
        r[MM2S_LENGTH] = slot.in_words * 4

    def _finish(self, slot: _Slot, out_flat: np.ndarray, timeout: float) -> None:
        r = self._regs
        sr = int(r[S2MM_DMASR])
        if not sr & (SR_IDLE | SR_ERRORS):
            deadline = time.perf_counter() + timeout
            polls = 0
            while True:
                sr = int(r[S2MM_DMASR])
                if sr & (SR_IDLE | SR_ERRORS):
                    break
                polls += 1
                if polls > SPIN_POLLS:  # a slow or hung fabric: stop spinning, let other threads (the gateway) run
                    time.sleep(min(MAX_POLL_SLEEP_S, 1e-5 * (polls - SPIN_POLLS)))
                mm2s = int(r[MM2S_DMASR])
                if mm2s & SR_ERRORS and mm2s != ALL_ONES:  # the send side failed: nothing will come back
                    self._raise_status(mm2s, "MM2S")
                if time.perf_counter() > deadline:
                    self._fail()
                    raise DeviceTimeoutError(
                        f"{self.manifest.model.name}: DMA receive did not complete within {timeout:g} s "
                        f"({slot.n} samples, {(slot.out_words + CHECK_WORDS) * 4} bytes expected; "
                        f"S2MM_DMASR=0x{sr:08x}: {_status(sr)}). The "
                        "accelerator hung or is too slow; the DMA was reset. Check that the IP asserts TLAST "
                        "and that the bitstream matches the package"
                    )
        if sr & SR_ERRORS or sr == ALL_ONES:
            self._raise_status(sr, "S2MM")
        got = int(r[S2MM_LENGTH])
        want = (slot.out_words + CHECK_WORDS) * 4
        if got != want:
            self._fail()
            hint = (
                "the bitstream predates the output check word: rebuild the overlay with this lepton-hls"
                if got == slot.out_words * 4
                else "TLAST came early"
            )
            raise ShortTransferError(
                f"{self.manifest.model.name}: accelerator returned {got} bytes for {slot.n} samples, expected "
                f"{want} ({hint}); the DMA was reset"
            )
        slot.out.invalidate()
        sent = int(slot.out_np[slot.out_words])
        crc = check_word(slot.out_np[: slot.out_words])
        if sent != crc:
            self._fail()
            raise IntegrityError(
                f"{self.manifest.model.name}: output check word 0x{sent:08x} != CRC-32 0x{crc:08x} of the "
                f"{slot.out_words} data words ({slot.n} samples): bits flipped between the accelerator and memory "
                "(marginal timing or a bad interconnect); the batch was discarded and the DMA reset"
            )
        if not self._dq.from_lanes(out_flat, slot.out_np, slot.out_lanes, slot.n * self.out_size):
            self._fail()
            raise CorruptOutputError(
                f"{self.manifest.model.name}: output words break the {self.manifest.output.format} wire format "
                "(spare lane bits or padding set): data corrupted between the accelerator and memory"
            )

    # ---- recovery -------------------------------------------------------------------------------------------
    def _raise_status(self, sr: int, channel: str):
        self._fail()
        if sr == ALL_ONES:
            raise DeviceMissingError(
                f"the DMA's registers read 0xFFFFFFFF: no device answers at 0x{self.dma.mmio.base_addr:08x}. "
                "Is the board powered and the bitstream loaded?"
            )
        detail = getattr(self.device, "last_error", "")
        raise DmaError(
            f"{channel} DMA {'/'.join(error_kinds(sr))} error (DMASR=0x{sr:08x}: {_status(sr)})"
            f"{': ' + detail if detail else ''}; "
            "the DMA was reset"
        )

    def _fail(self) -> None:
        self._needs_reset = True
        try:
            self._reset_dma()
        except DeviceMissingError:
            pass

    def _reset_dma(self) -> None:
        """Soft-reset the DMA (both channels), then start both channels again (PG021 simple mode)."""
        r = self._regs
        r[MM2S_DMACR] = CR_RESET
        if int(r[MM2S_DMASR]) == ALL_ONES:
            self._needs_reset = True
            raise DeviceMissingError(
                f"the DMA's registers read 0xFFFFFFFF: no device answers at 0x{self.dma.mmio.base_addr:08x}"
            )
        for _ in range(1000):
            if not int(r[MM2S_DMACR]) & CR_RESET:
                break
        r[MM2S_DMACR] = CR_RS
        r[S2MM_DMACR] = CR_RS
        # Buffer addresses fit in 32 bits on Zynq-7000: the MSB halves are written once here, not per call.
        r[MM2S_SA_MSB] = 0
        r[S2MM_DA_MSB] = 0
        self._needs_reset = False

    def reset(self) -> None:
        """Reset the DMA explicitly (after an error, or before handing the board to another program)."""
        self._reset_dma()

    def health(self) -> tuple[bool, str]:
        r = self._regs
        sr = (int(r[MM2S_DMASR]), int(r[S2MM_DMASR]))
        if ALL_ONES in sr:
            return False, "DMA registers read 0xFFFFFFFF: device missing"
        if any(s & SR_HALTED for s in sr):
            return False, (f"DMA halted (MM2S_DMASR=0x{sr[0]:08x}: {_status(sr[0])}, "
                           f"S2MM_DMASR=0x{sr[1]:08x}: {_status(sr[1])})")
        return True, f"{self.manifest.model.name} on {getattr(self.device, 'name', self.device)}"

    # ---- measurement ----------------------------------------------------------------------------------------
    def throughput_test(self, samples: int = 10000, batch: int | None = None, seed: int = 0) -> StageTimes:
        """Stream `samples` random in-range samples in batches of `batch` (default: the buffer size) and time
        each stage: pack (preprocess + quantize + pack), transfer (DMA programming and waiting, minus the
        fabric's own time where the device reports it), compute (the fabric), unpack."""
        batch = min(int(batch or self.max_batch), self.max_batch)
        fmt = self.manifest.input.format
        rng = np.random.default_rng(seed)
        y = rng.uniform(max(fmt.min_value, -4.0), min(fmt.max_value, 4.0), size=(batch, self.in_size))
        x = y if self._identity else y / self._inv_scale + self._mean
        out = np.empty((batch, self.out_size))
        slot = self._slots[0]
        t_pack = t_xfer = t_unpack = 0.0
        fabric0 = getattr(self.device, "fabric_seconds", None)
        done = 0
        t_start = time.perf_counter()
        while done < samples:
            n = min(batch, samples - done)
            t0 = time.perf_counter()
            self._fill(slot, x[:n])
            t1 = time.perf_counter()
            self._start(slot)
            r = self._regs
            deadline = t1 + self.timeout_s
            while not int(r[S2MM_DMASR]) & (SR_IDLE | SR_ERRORS):
                if time.perf_counter() > deadline:
                    break
            t2 = time.perf_counter()
            self._finish(slot, out[:n].reshape(-1), self.timeout_s)
            t3 = time.perf_counter()
            t_pack += t1 - t0
            t_xfer += t2 - t1
            t_unpack += t3 - t2
            done += n
        total = time.perf_counter() - t_start
        compute = 0.0
        if fabric0 is not None:
            compute = self.device.fabric_seconds - fabric0
            t_xfer = max(t_xfer - compute, 0.0)
        return StageTimes(
            samples=done,
            batch=batch,
            pack_s=t_pack,
            transfer_s=t_xfer,
            compute_s=compute,
            unpack_s=t_unpack,
            total_s=total,
            in_bytes_per_sample=self.in_size * self.in_lane_bytes,
            out_bytes_per_sample=self.out_size * self.out_lane_bytes,
        )

    def close(self) -> None:
        for slot in self._slots:
            slot.inp.freebuffer()
            slot.out.freebuffer()
        self._slots = []


def _status(sr: int) -> str:
    """A status word's set bits by name, for error messages."""
    return ", ".join(status_names(sr)) or "no bits set"


def _find_bitstream(package_dir: Path, manifest: Manifest, device) -> Path:
    """The package's own overlay when vendor tools built one; on the emulated board, one generated from the
    manifest unless the package's .hwh already describes an emulatable accelerator."""
    recorded = manifest.overlay.bitstream if manifest.overlay else None
    candidates = [package_dir / recorded] if recorded else []
    overlay_dir = package_dir / "overlay"
    if overlay_dir.is_dir():
        candidates += sorted(overlay_dir.glob("*.bit"))
    bits = [p for p in candidates if p.is_file() and p.with_suffix(".hwh").is_file()]
    emulated = type(device).__name__ == "EmulatedBoard"
    if emulated:
        bits = [p for p in bits if 'NAME="C_STREAM"' in p.with_suffix(".hwh").read_text(errors="replace")]
    if bits:
        return bits[0]
    if emulated:
        from .board import write_overlay

        digest = manifest.to_dict()["digest"][:16]
        cache = Path(tempfile.gettempdir()) / "lepton-hls-emulated-overlays" / digest
        return write_overlay(manifest, cache, "lepton", name=manifest.model.name)
    raise ManifestError(
        f"{package_dir} has no bitstream with its .hwh (overlay/*.bit): build it with `lepton-hls overlay` and "
        "Vivado, or run on the emulated board"
    )


def _find_dma(overlay, manifest: Manifest, name: str | None = None):
    wanted = name or (manifest.overlay.dma if manifest.overlay else None)
    dmas = [k for k, v in overlay.ip_dict.items() if str(v.get("type", "")).startswith("xilinx.com:ip:axi_dma:")]
    if wanted:
        candidates = [wanted]
    elif len(dmas) > 1:
        raise DeviceError(
            f"overlay {overlay.bitfile_name} has several AXI DMAs ({', '.join(dmas)}); name the one that feeds "
            "the accelerator (Accelerator.load(..., dma=NAME) or reports.overlay.dma in the manifest)"
        )
    else:
        candidates = dmas
    for path in candidates:
        if path in overlay.ip_dict:
            obj = overlay
            for part in path.split("/"):
                obj = getattr(obj, part)
            return obj
    raise DeviceError(f"overlay {overlay.bitfile_name} has no AXI DMA {wanted or ''} (it has {dmas or 'none'})")
