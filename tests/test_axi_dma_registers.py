"""The AXI DMA register map (lepton_host.axi_dma_registers) against PG021, and its being the only one: the
board runtime and the emulated board's DMA model both take it from there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from lepton_host import axi_dma_registers as regs

HOST = Path(__file__).resolve().parents[1] / "host" / "lepton_host"

# PG021 (AXI DMA v7.1), simple-mode register space: byte offsets.
PG021_OFFSETS = {
    "MM2S_DMACR": 0x00, "MM2S_DMASR": 0x04, "MM2S_SA": 0x18, "MM2S_SA_MSB": 0x1C, "MM2S_LENGTH": 0x28,
    "S2MM_DMACR": 0x30, "S2MM_DMASR": 0x34, "S2MM_DA": 0x48, "S2MM_DA_MSB": 0x4C, "S2MM_LENGTH": 0x58,
}  # fmt: skip
# DMASR and DMACR bit positions.
PG021_SR_BITS = {"SR_HALTED": 0, "SR_IDLE": 1, "SR_INT_ERR": 4, "SR_SLV_ERR": 5, "SR_DEC_ERR": 6,
                 "SR_IOC_IRQ": 12, "SR_DLY_IRQ": 13, "SR_ERR_IRQ": 14}  # fmt: skip
PG021_CR_BITS = {"CR_RS": 0, "CR_RESET": 2, "CR_IOC_IRQ_EN": 12, "CR_DLY_IRQ_EN": 13, "CR_ERR_IRQ_EN": 14}


def test_offsets_and_word_indices_are_pg021s():
    assert regs.OFFSETS == PG021_OFFSETS
    for name, offset in PG021_OFFSETS.items():
        assert getattr(regs, name) == offset // 4, name


def test_control_and_status_bits_are_pg021s():
    for name, bit in {**PG021_SR_BITS, **PG021_CR_BITS}.items():
        assert getattr(regs, name) == 1 << bit, name
    assert regs.SR_ERRORS == 0x70 and regs.SR_IRQS == 0x7000
    assert regs.LENGTH_MASK == (1 << 26) - 1


def test_a_status_word_decodes_to_pg021_names():
    sr = regs.SR_HALTED | regs.SR_SLV_ERR | regs.SR_ERR_IRQ
    assert regs.status_names(sr) == ["Halted", "DMASlvErr", "Err_Irq"]
    assert regs.error_kinds(sr) == ["slave"]
    assert regs.status_names(regs.SR_IDLE | regs.SR_IOC_IRQ) == ["Idle", "IOC_Irq"]
    assert regs.error_kinds(regs.SR_INT_ERR | regs.SR_DEC_ERR) == ["internal", "decode"]
    assert regs.status_names(0) == []


_REGISTER_NAME = re.compile(r"_?(MM2S|S2MM)_\w+|_?(SR|CR)_[A-Z_]+")


def test_no_other_module_of_the_board_side_defines_the_register_map():
    """A second definition of a register or bit (even under another spelling) is how the two drift apart."""
    offenders = []
    for path in sorted(HOST.rglob("*.py")):
        if path.name == "axi_dma_registers.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            names = [n.id for t in targets for n in (t.elts if isinstance(t, ast.Tuple) else [t])
                     if isinstance(n, ast.Name)]  # names bound, not registers written (r[S2MM_DA] = ...)
            offenders += [f"{path.relative_to(HOST)}:{node.lineno} {n}" for n in names if _REGISTER_NAME.fullmatch(n)]
    assert not offenders, offenders


def test_the_runtime_and_the_emulated_dma_import_the_map():
    for rel in ("runtime.py", "board/dma.py"):
        tree = ast.parse((HOST / rel).read_text())
        sources = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "axi_dma_registers" in {m.rsplit(".", 1)[-1] for m in sources if m}, rel
