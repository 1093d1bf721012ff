"""Faults the emulated board can inject on demand, each a failure a real board shows."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class FaultKind(str, Enum):
    HANG = "hang"  # the accelerator stops: neither DMA channel ever goes idle again until a DMA reset
    SHORT = "short"  # the accelerator asserts TLAST early: S2MM completes with fewer bytes than the batch
    CORRUPT = "corrupt"  # output words arrive with flipped bits (a marginal bus or a timing failure)
    SLOW = "slow"  # results arrive after `delay_s` (a congested interconnect, a slower clock)
    MISSING = "missing"  # the device is gone: registers read all ones, pynq's probe no longer finds it


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    delay_s: float = 0.5  # SLOW: how late the results arrive
    xor_mask: int = 0xFFFFFFFF  # CORRUPT: bits flipped in each corrupted word
    every: int = 1  # CORRUPT: corrupt every `every`-th output word
    keep_fraction: float = 0.5  # SHORT: fraction of the output words that still arrive

    @classmethod
    def of(cls, kind: str | FaultKind, **kw) -> Fault:
        return cls(FaultKind(kind), **kw)
