"""cocotb bench for ip/rtl/lepton_axis.v around a package's da4ml core.

The case file (LEPTON_COSIM_CASE, written by `runner.py`) holds raw input samples, the C simulation's raw
outputs for them, the batch sizes and the wire formats. Batches are packed with the host packer
(`lepton_host.packing`), streamed with random idle cycles on the input and random backpressure on the output,
and every output word, the check word (CRC-32 of the batch's data words, recomputed here with zlib), the TLAST
position and the first-output latency in cycles are checked.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time
from lepton_host.fixedpoint import FixedFormat
from lepton_host.packing import check_word, pack, packet_words, unpack

PERIOD_NS = 10


def _case():
    z = np.load(os.environ["LEPTON_COSIM_CASE"], allow_pickle=False)
    meta = json.loads(str(z["meta"]))
    return z["inputs"], z["expected"], meta


async def _drive(dut, batches, idle_p, rng, stats):
    """Offer each word with random idle cycles before it; a word moves on an edge where TVALID and TREADY
    were both high just before it."""
    for words in batches:
        for k, w in enumerate(words):
            while rng.random() < idle_p:
                dut.s_axis_tvalid.value = 0
                await RisingEdge(dut.clk)
            dut.s_axis_tdata.value = int(w)
            dut.s_axis_tlast.value = int(k == len(words) - 1)
            dut.s_axis_tvalid.value = 1
            while True:
                await ReadOnly()
                ready = dut.s_axis_tready.value == 1
                await RisingEdge(dut.clk)
                if ready:
                    break
            if stats["first_in"] is None:
                stats["first_in"] = _now()
        dut.s_axis_tvalid.value = 0
        dut.s_axis_tlast.value = 0


async def _sink(dut, n_batches, stall_p, rng, stats, out, limit):
    current: list = []
    while len(out) < n_batches:
        ready = int(rng.random() >= stall_p)
        dut.m_axis_tready.value = ready
        await ReadOnly()
        valid = dut.m_axis_tvalid.value == 1
        word = (int(dut.m_axis_tdata.value), int(dut.m_axis_tlast.value)) if valid else None
        await RisingEdge(dut.clk)
        if valid and ready:
            if stats["first_out"] is None:
                stats["first_out"] = _now()
            current.append(word)
            if word[1]:
                out.append(current)
                current = []
        assert stats["cycle"] < limit, (
            f"no TLAST after {limit} cycles: {len(out)} of {n_batches} batches came back, {len(current)} words pending"
        )


def _now() -> int:
    """Clock edges since time zero (the clock period is 10 ns)."""
    return int(get_sim_time("ns")) // PERIOD_NS


async def _count(dut, stats):
    while True:
        await RisingEdge(dut.clk)
        stats["cycle"] += 1


@cocotb.test()
async def stream_batches(dut):
    inputs, expected, meta = _case()
    in_fmt, out_fmt = FixedFormat.from_dict(meta["input_format"]), FixedFormat.from_dict(meta["output_format"])
    n_in, n_out = inputs.shape[1], expected.shape[1]
    rng = random.Random(meta["seed"])
    sizes = meta["batches"]
    starts = np.cumsum([0] + sizes)
    batches = [pack(inputs[a:b], in_fmt) for a, b in zip(starts[:-1], starts[1:])]

    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.aresetn.value = 0
    dut.s_axis_tvalid.value = 0
    dut.s_axis_tlast.value = 0
    dut.s_axis_tdata.value = 0
    dut.m_axis_tready.value = 0
    for _ in range(4):
        await RisingEdge(dut.clk)
    dut.aresetn.value = 1
    await RisingEdge(dut.clk)

    stats = {"cycle": 0, "first_in": None, "first_out": None}
    cocotb.start_soon(_count(dut, stats))
    # The first batch runs with no idle cycles and no backpressure, so its first-output latency is the
    # wrapper's own; the rest are stressed.
    out: list = []
    first = cocotb.start_soon(_drive(dut, batches[:1], 0.0, rng, stats))
    limit = 200 + 20 * len(inputs) * max(n_in, n_out)
    await _sink(dut, 1, 0.0, rng, stats, out, limit)
    await first
    latency = stats["first_out"] - stats["first_in"]
    driver = cocotb.start_soon(_drive(dut, batches[1:], meta["idle_p"], rng, stats))
    await _sink(dut, len(batches), meta["stall_p"], rng, stats, out, limit)
    await driver

    mismatched_rows = 0
    checked_crcs = 0
    for b, (a, e) in enumerate(zip(starts[:-1], starts[1:])):
        words = np.array([w for w, _ in out[b]], dtype=np.uint32)
        lasts = [t for _, t in out[b]]
        n_words = packet_words((e - a) * n_out, out_fmt)
        assert len(words) == n_words, f"batch {b}: {len(words)} output words, expected {n_words} (TLAST misplaced)"
        assert lasts[-1] == 1 and not any(lasts[:-1]), f"batch {b}: TLAST not on the last word only"
        crc = check_word(words[:-1])
        assert int(words[-1]) == crc, f"batch {b}: check word 0x{int(words[-1]):08x}, CRC-32 of the data 0x{crc:08x}"
        checked_crcs += 1
        got = unpack(words[:-1], out_fmt, (e - a) * n_out).reshape(e - a, n_out)
        bad = np.any(got != expected[a:e], axis=1)
        mismatched_rows += int(bad.sum())
        assert not bad.any(), (
            f"batch {b}: {int(bad.sum())} samples differ from the C simulation, first at row {int(np.argmax(bad))}: "
            f"got {got[bad][0].tolist()} expected {expected[a:e][bad][0].tolist()}"
        )
    result = {
        "samples": int(len(inputs)),
        "batches": len(sizes),
        "first_output_latency_cycles": int(latency),
        "total_cycles": int(stats["cycle"]),
        "mismatched_rows": mismatched_rows,
        "check_words_verified": checked_crcs,
        "idle_p": meta["idle_p"],
        "stall_p": meta["stall_p"],
    }
    dut._log.info("cosim result: %s", result)
    with open(os.environ["LEPTON_COSIM_RESULT"], "w") as f:
        json.dump(result, f)
