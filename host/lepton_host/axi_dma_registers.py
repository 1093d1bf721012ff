"""The Xilinx AXI DMA's simple-mode (direct register) interface, as PG021 defines it: register byte offsets,
the uint32 word indices a mapped register array is indexed with, and the control and status bits.

The board runtime (`runtime.py`) programs these registers and the emulated board's DMA model (`board/dma.py`)
implements them; both take them from here. Standard library only, so the board can import it.
"""

from __future__ import annotations

# Byte offsets of the simple-mode registers, by their PG021 names.
OFFSETS: dict[str, int] = {
    "MM2S_DMACR": 0x00,
    "MM2S_DMASR": 0x04,
    "MM2S_SA": 0x18,
    "MM2S_SA_MSB": 0x1C,
    "MM2S_LENGTH": 0x28,
    "S2MM_DMACR": 0x30,
    "S2MM_DMASR": 0x34,
    "S2MM_DA": 0x48,
    "S2MM_DA_MSB": 0x4C,
    "S2MM_LENGTH": 0x58,
}

# Word indices (byte offset / 4): pynq maps the registers as a uint32 array, and both sides index that.
MM2S_DMACR = OFFSETS["MM2S_DMACR"] // 4
MM2S_DMASR = OFFSETS["MM2S_DMASR"] // 4
MM2S_SA = OFFSETS["MM2S_SA"] // 4
MM2S_SA_MSB = OFFSETS["MM2S_SA_MSB"] // 4
MM2S_LENGTH = OFFSETS["MM2S_LENGTH"] // 4
S2MM_DMACR = OFFSETS["S2MM_DMACR"] // 4
S2MM_DMASR = OFFSETS["S2MM_DMASR"] // 4
S2MM_DA = OFFSETS["S2MM_DA"] // 4
S2MM_DA_MSB = OFFSETS["S2MM_DA_MSB"] // 4
S2MM_LENGTH = OFFSETS["S2MM_LENGTH"] // 4

# DMACR bits.
CR_RS = 1 << 0  # run/stop
CR_RESET = 1 << 2  # soft reset (resets both channels)
CR_IOC_IRQ_EN = 1 << 12
CR_DLY_IRQ_EN = 1 << 13
CR_ERR_IRQ_EN = 1 << 14

# DMASR bits.
SR_HALTED = 1 << 0
SR_IDLE = 1 << 1
SR_INT_ERR = 1 << 4  # DMAIntErr
SR_SLV_ERR = 1 << 5  # DMASlvErr
SR_DEC_ERR = 1 << 6  # DMADecErr
SR_IOC_IRQ = 1 << 12
SR_DLY_IRQ = 1 << 13
SR_ERR_IRQ = 1 << 14
SR_ERRORS = SR_INT_ERR | SR_SLV_ERR | SR_DEC_ERR
SR_IRQS = SR_IOC_IRQ | SR_DLY_IRQ | SR_ERR_IRQ  # the write-1-to-clear bits

# The LENGTH registers' widest field (c_sg_length_width = 26): the largest simple-mode transfer in bytes.
LENGTH_MASK = (1 << 26) - 1

# What a register read returns when no device answers at the DMA's address.
ALL_ONES = 0xFFFFFFFF

_SR_NAMES = (
    (SR_HALTED, "Halted"), (SR_IDLE, "Idle"), (SR_INT_ERR, "DMAIntErr"), (SR_SLV_ERR, "DMASlvErr"),
    (SR_DEC_ERR, "DMADecErr"), (SR_IOC_IRQ, "IOC_Irq"), (SR_DLY_IRQ, "Dly_Irq"), (SR_ERR_IRQ, "Err_Irq"),
)  # fmt: skip
_ERROR_KINDS = ((SR_INT_ERR, "internal"), (SR_SLV_ERR, "slave"), (SR_DEC_ERR, "decode"))


def status_names(sr: int) -> list[str]:
    """The PG021 names of the DMASR bits set in `sr`, e.g. ['Halted', 'DMASlvErr', 'Err_Irq']."""
    return [name for bit, name in _SR_NAMES if sr & bit]


def error_kinds(sr: int) -> list[str]:
    """The DMA errors flagged in `sr`, in words: 'internal', 'slave', 'decode'."""
    return [kind for bit, kind in _ERROR_KINDS if sr & bit]
