"""Board-side half of lepton-hls: everything here imports with numpy alone (pynq where a board is used).

The manifest (manifest.py) is the only contract with the build side; fixed-point formats (fixedpoint.py) are
how both halves agree on every bit.
"""

from .errors import ChecksumError, EmulationError, FormatError, InputShapeError, LeptonError, ManifestError
from .fixedpoint import FixedFormat

__all__ = [
    "ChecksumError",
    "EmulationError",
    "FixedFormat",
    "FormatError",
    "InputShapeError",
    "LeptonError",
    "ManifestError",
]
