"""Exception types shared by the build side and the board side.

Every message is meant to be read by a hardware engineer at a terminal: it names the file, layer, tool or
register involved and says what to do next.
"""


class LeptonError(Exception):
    """Base class: the CLI turns any of these into a one-line message and a non-zero exit status."""

    exit_code = 2


class ManifestError(LeptonError):
    """The overlay package's manifest is missing, malformed, of an unknown schema version, or inconsistent."""


class ChecksumError(ManifestError):
    """An artifact of the package does not match the sha256 recorded in its manifest."""


class FormatError(LeptonError):
    """A fixed-point type string could not be understood."""


class EmulationError(LeptonError):
    """The bit-exact emulator could not run the package (missing library, unsupported layer, bad input)."""


class InputShapeError(LeptonError):
    """A batch does not have the shape the package's input declares."""
