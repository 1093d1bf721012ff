"""The Xilinx AXI DMA (PG021) in simple, direct-register mode, as the host sees it through its registers.

The register file is a plain numpy uint32 array, handed to pynq's `MMIO` exactly as a real board's
`/dev/mem` mapping is, so a register read costs what it costs on the board: a numpy element read. Only
writes to the registers with side effects (DMACR, DMASR, LENGTH) run Python here; that is where the
hardware acts too. A LENGTH write moves the data: MM2S reads the words from the emulated DDR and streams
them (with TLAST on the last) into the accelerator; S2MM writes the accelerator's output packet to memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from ..axi_dma_registers import (
    ALL_ONES,
    CR_RESET,
    CR_RS,
    LENGTH_MASK,
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
    SR_DEC_ERR,
    SR_ERR_IRQ,
    SR_HALTED,
    SR_IDLE,
    SR_INT_ERR,
    SR_IOC_IRQ,
    SR_IRQS,
)


class RegisterFile(np.ndarray):
    """uint32 register array whose element writes may trigger the DMA's behaviour; reads stay plain numpy."""

    def __setitem__(self, idx, value):
        hook = self._hooks.get(idx) if type(idx) is int else None
        if hook is None:
            np.ndarray.__setitem__(self, idx, value)
        else:
            hook(int(value))


class _Channel:
    def __init__(self):
        self.armed = None  # (address, nbytes) of a started S2MM transfer


class AxiDmaModel:
    """One AXI DMA feeding one stream accelerator. `memory` resolves physical addresses to numpy views;
    `board` supplies the accelerator, its compute and the active faults."""

    def __init__(self, name: str, base_addr: int, length: int, board):
        self.name = name
        self.base_addr = base_addr
        self.board = board
        regs = np.zeros(length // 4, dtype=np.uint32).view(RegisterFile)
        regs._hooks = {
            MM2S_DMACR: lambda v: self._write_cr(MM2S_DMACR, MM2S_DMASR, v),
            S2MM_DMACR: lambda v: self._write_cr(S2MM_DMACR, S2MM_DMASR, v),
            MM2S_DMASR: lambda v: self._write_sr(MM2S_DMASR, v),
            S2MM_DMASR: lambda v: self._write_sr(S2MM_DMASR, v),
            MM2S_LENGTH: self._write_mm2s_length,
            S2MM_LENGTH: self._write_s2mm_length,
        }
        self.regs = regs
        self._r = regs.view(np.ndarray)  # writes through here skip the hooks
        self._lock = threading.RLock()
        self._packets: deque = deque()  # output packets waiting for S2MM: [ready_time, words]
        self._s2mm_armed = None
        self._generation = 0  # bumped by a reset: results of work started before it are discarded
        self.transfers: deque = deque(maxlen=256)  # (channel, address, nbytes) of every started transfer
        self._saved = None
        self._reset()

    # ---- register side effects ---------------------------------------------------------------------------
    def _reset(self):
        with self._lock:
            self._r[:] = 0
            self._r[MM2S_DMASR] = SR_HALTED
            self._r[S2MM_DMASR] = SR_HALTED
            self._packets.clear()
            self._s2mm_armed = None
            self._generation += 1

    def _write_cr(self, cr: int, sr: int, value: int):
        r = self._r
        if self.board.missing:
            return
        if value & CR_RESET:  # soft reset resets both channels (PG021: "the entire AXI DMA")
            self._reset()
            return
        r[cr] = value
        if value & CR_RS:
            r[sr] &= ~np.uint32(SR_HALTED)
        else:
            r[sr] |= np.uint32(SR_HALTED)

    def _write_sr(self, sr: int, value: int):
        if self.board.missing:
            return
        r = self._r
        r[sr] &= ~np.uint32(value & SR_IRQS)

    def _start(self, sr: int, length_reg: int, value: int) -> bool:
        r = self._r
        if self.board.missing or r[sr] & SR_HALTED:
            return False  # PG021: writing LENGTH while halted has no effect
        r[length_reg] = value
        r[sr] &= ~np.uint32(SR_IDLE)
        return True

    def _error(self, sr: int, bits: int):
        r = self._r
        r[sr] |= np.uint32(bits | SR_ERR_IRQ | SR_HALTED)
        r[sr] &= ~np.uint32(SR_IDLE)

    def _complete(self, sr: int):
        r = self._r
        r[sr] |= np.uint32(SR_IDLE | SR_IOC_IRQ)

    def _write_mm2s_length(self, value: int):
        t0 = time.perf_counter()
        try:
            self._mm2s_length(value)
        finally:
            self.board.fabric_seconds += time.perf_counter() - t0

    def _write_s2mm_length(self, value: int):
        t0 = time.perf_counter()
        try:
            self._s2mm_length(value)
        finally:
            self.board.fabric_seconds += time.perf_counter() - t0

    def _mm2s_length(self, value: int):
        with self._lock:
            if not self._start(MM2S_DMASR, MM2S_LENGTH, value):
                return
            r = self._r
            addr = int(r[MM2S_SA]) | (int(r[MM2S_SA_MSB]) << 32)
            nbytes = value & LENGTH_MASK
            self.transfers.append(("mm2s", addr, nbytes))
            if nbytes == 0 or nbytes % 4:
                self._error(MM2S_DMASR, SR_INT_ERR)
                return
            src = self.board.memory_view(addr, nbytes)
            if src is None:
                self._error(MM2S_DMASR, SR_DEC_ERR)
                return
            self.board.accept_packet(self, src.view(np.uint32).copy(), self._generation)

    def _s2mm_length(self, value: int):
        with self._lock:
            if not self._start(S2MM_DMASR, S2MM_LENGTH, value):
                return
            r = self._r
            addr = int(r[S2MM_DA]) | (int(r[S2MM_DA_MSB]) << 32)
            nbytes = value & LENGTH_MASK
            self.transfers.append(("s2mm", addr, nbytes))
            if nbytes == 0:
                self._error(S2MM_DMASR, SR_INT_ERR)
                return
            self._s2mm_armed = (addr, nbytes)
            self.deliver()

    # ---- called by the board ---------------------------------------------------------------------------
    def mm2s_done(self, generation: int):
        with self._lock:
            if generation == self._generation:
                self._complete(MM2S_DMASR)

    def mm2s_failed(self, generation: int, bits: int):
        with self._lock:
            if generation == self._generation:
                self._error(MM2S_DMASR, bits)

    def push_packet(self, words: np.ndarray, generation: int, ready_at: float = 0.0):
        """The accelerator finished a packet (TLAST on its last word); S2MM takes it when armed."""
        with self._lock:
            if generation != self._generation:
                return
            self._packets.append([ready_at, words])
        if ready_at > time.perf_counter():
            t = threading.Timer(ready_at - time.perf_counter(), self.deliver)
            t.daemon = True
            t.start()
        else:
            self.deliver()

    def deliver(self):
        with self._lock:
            if self._s2mm_armed is None or not self._packets or self.board.missing:
                return
            ready_at, words = self._packets[0]
            if ready_at > time.perf_counter():
                return
            addr, nbytes = self._s2mm_armed
            dst = self.board.memory_view(addr, nbytes)
            if dst is None:
                self._s2mm_armed = None
                self._error(S2MM_DMASR, SR_DEC_ERR)
                return
            n = min(words.size, nbytes // 4)
            dst.view(np.uint32)[:n] = words[:n]
            self._s2mm_armed = None
            if n < words.size:  # the packet is longer than the buffer: PG021 flags an internal error
                self._packets[0][1] = words[n:]
                self._error(S2MM_DMASR, SR_INT_ERR)
                return
            self._packets.popleft()
            r = self._r
            r[S2MM_LENGTH] = n * 4  # simple mode: LENGTH reads back the bytes actually received
            self._complete(S2MM_DMASR)

    # ---- device missing ----------------------------------------------------------------------------------
    def disappear(self):
        with self._lock:
            self._saved = self.regs.view(np.ndarray).copy()
            self._r[:] = ALL_ONES

    def reappear(self):
        """Back after power-up: the DMA comes out of reset, halted, with nothing in flight."""
        self._reset()
