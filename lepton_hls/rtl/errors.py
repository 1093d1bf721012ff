"""Errors of the RTL path."""

from lepton_host.errors import LeptonError


class RtlCoverageError(LeptonError):
    """A layer, activation or fixed-point mode that the RTL tracer does not reproduce exactly.

    The tracer refuses rather than approximates: the message names the layer and what it would need."""


class RtlToolError(LeptonError):
    """Verilator (or the C++ compiler it drives) failed, or the toolchain is missing."""


class RtlTimeoutError(RtlToolError):
    """Verilator, make, the C++ compiler or a simulation ran past its time limit and was stopped."""
