"""Every use of a third-party library's private or internal API on the board side, one module per library.

The board side's counterpart of `lepton_hls.compat` (which the board side never imports): an upgrade of pynq is
checked against `compat/pynq.py` alone. `tests/test_compat_hooks.py` fails when code outside these modules
reaches into a library's private names again.
"""
