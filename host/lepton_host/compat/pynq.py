"""pynq internals the emulated board relies on. Written against pynq 3.0.1.

Not here, because they are pynq's documented extension protocol rather than internals: a `Device` subclass
declares `_probe_` and `_probe_priority_` in its class body (`DeviceMeta`'s docstring), which
`board/device.py` does.
"""

from __future__ import annotations


def zynq_hwh_parser(hwh_path: str):
    """pynq's parser of the Zynq-7000 hardware handoff at `hwh_path`, on any machine.

    pynq 3.0.1: `pynq.pl_server.hwh_parser.HWH` is chosen by the CPU this runs on (`_HWHZynq` on a Zynq-7000's
    armv7l, `_HWHUltrascale` on aarch64, the abstract `_HWHABC` elsewhere); the emulated board always describes
    a PYNQ-Z2, so it takes the Zynq class by name. The object has the public attributes `Device` reads
    (`ip_dict`, `mem_dict`, `clock_dict`, `instance2attr`, `systemgraph`, ...)."""
    from pynq.pl_server.hwh_parser import _HWHZynq

    return _HWHZynq(hwh_name=hwh_path)


def forget_probed_devices(*classes) -> None:
    """Make pynq probe for devices again the next time `Device.devices` or `Device.active_device` is asked,
    on each of `classes`.

    pynq 3.0.1: `DeviceMeta` caches the probe's result in the class attribute `_devices` and the chosen device
    in `_active_device`, on the class they were asked of, and never probes again while they exist."""
    for cls in classes:
        for attr in ("_devices", "_active_device"):
            if attr in cls.__dict__:
                delattr(cls, attr)
