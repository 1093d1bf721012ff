"""The one interface every inference path implements: the emulator, the emulated board, a real board, and
the cloud client. The gateway and the router see only this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""
    device: str = ""


@runtime_checkable
class Backend(Protocol):
    name: str

    def predict(self, x: np.ndarray, timeout: float | None = None) -> np.ndarray:
        """Raw features of shape (N, *input_shape), before preprocessing -> model outputs (N, *output_shape),
        float64. Raises a LeptonError subclass on failure; never returns a buffer it will reuse."""
        ...

    def health(self) -> Health: ...

    def close(self) -> None: ...
