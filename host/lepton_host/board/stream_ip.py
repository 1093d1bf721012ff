"""The accelerator behind the emulated DMA: stream words in, bit-exact model, stream words out.

`packed` speaks the wire format of docs/package-layout.md, check word included (computed here, in the
"fabric", over the words sent, so that corruption the board injects afterwards is what the host must catch);
`float32` speaks what hls4ml's `myproject_axi`
speaks (one float32 word per value, converted to the input `ap_fixed` type on entry and back on exit).
The arithmetic is delegated to any object with `predict_raw(raw int64 (N, *in_shape)) -> raw int64
(N, *out_shape)`: the C simulation, the fast engine, or an RTL emulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import packing
from ..fixedpoint import FixedFormat


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in str(text).split("x") if s)


@dataclass
class StreamIP:
    name: str
    stream: str  # "packed" | "float32"
    in_format: FixedFormat
    in_shape: tuple[int, ...]
    out_format: FixedFormat
    out_shape: tuple[int, ...]
    model_sha256: str = ""

    @classmethod
    def from_parameters(cls, name: str, p: dict) -> StreamIP:
        return cls(
            name=name,
            stream=p["C_STREAM"],
            in_format=FixedFormat.parse(p["C_IN_FORMAT"]),
            in_shape=_shape(p.get("C_IN_SHAPE", p["C_IN_SIZE"])),
            out_format=FixedFormat.parse(p["C_OUT_FORMAT"]),
            out_shape=_shape(p.get("C_OUT_SHAPE", p["C_OUT_SIZE"])),
            model_sha256=p.get("C_MODEL_SHA256", ""),
        )

    def __post_init__(self):
        self.in_size = int(np.prod(self.in_shape))
        self.out_size = int(np.prod(self.out_shape))
        self._in_per_word = 1 if self.stream == "float32" else packing.lanes_per_word(self.in_format)

    def samples_in(self, n_words: int) -> int | None:
        """Samples carried by a TLAST-terminated packet of `n_words`, or None when the packet does not end
        on a sample boundary (the IP would wait for the rest of the sample forever)."""
        if self.stream == "float32":
            return n_words // self.in_size if n_words % self.in_size == 0 else None
        n = n_words * self._in_per_word // self.in_size
        return n if n and packing.words_for(n * self.in_size, self.in_format) == n_words else None

    def process(self, words: np.ndarray, compute) -> np.ndarray:
        """One input packet -> output packet words."""
        n = self.samples_in(words.size)
        if self.stream == "float32":
            x = words.view(np.float32).astype(np.float64).reshape((n, *self.in_shape))
            raw_in = self.in_format.quantize(x)
        else:
            raw_in = packing.unpack(words, self.in_format, n * self.in_size).reshape((n, *self.in_shape))
        raw_out = np.asarray(compute.predict_raw(raw_in), dtype=np.int64)
        raw_out = self.out_format.overflow(raw_out.reshape(n, self.out_size))
        if self.stream == "float32":
            return self.out_format.to_float(raw_out).astype(np.float32).reshape(-1).view(np.uint32)
        return packing.with_check_word(packing.pack(raw_out, self.out_format))
