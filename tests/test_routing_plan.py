"""The routing plan and its executor.

The plan (`routing.plan_route`) is a pure function of the policy, the model's task and the request's facts:
its decision table is checked here row by row, every combination of the facts each row covers, with no server.
The executor is checked through the real gateway (EdgeService) on the emulated board with a real package (the
tiny MLP's C simulation, built once per session); its cloud is a real OIP server running a different model, so
each answer row shows which path gave it. The executor must do what the plan says, and fall back as it allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import time

import numpy as np
import pytest
from serving_support import free_port

from lepton_host.serving import routing as R
from lepton_host.serving.errors import ServingError, Unavailable
from lepton_host.serving.routing import RequestFacts, RoutingPolicy, plan_route

pytest.importorskip("pynq")

from test_emulated_board import dev, tiny  # noqa: E402,F401  (the shared session build of the tiny package)

from lepton_host.backends import EmulatorBackend, emulated_board_backend  # noqa: E402
from lepton_host.manifest import Preprocessing, load_manifest  # noqa: E402
from lepton_host.serving.batcher import BatcherConfig  # noqa: E402
from lepton_host.serving.cloud_client import CloudConfig  # noqa: E402
from lepton_host.serving.gateway import EdgeService, GatewayConfig, create_gateway  # noqa: E402
from lepton_host.serving.oip import InferRequest  # noqa: E402
from lepton_host.serving.plan_executor import execute  # noqa: E402
from lepton_host.serving.runner import ServerThread  # noqa: E402

ANY = "*"
IN_RANGE_MASK = np.array([True, False, True])  # the range check's result for a 3-sample request
BUDGET_S = 0.05

# ---- the decision table ----------------------------------------------------------------------------------------
# First matching row wins. Columns: mode, cloud configured, edge healthy, edge queue over the latency budget,
# range check on -> where the samples go first ("edge", "cloud", or "range": each by its range check) and why.
TABLE = [
    ("edge", ANY, ANY, ANY, ANY, "edge", R.FORCED),
    ("auto", False, ANY, ANY, ANY, "edge", R.NO_CLOUD),
    ("cloud", ANY, ANY, ANY, ANY, "cloud", R.FORCED),
    ("auto", True, False, ANY, ANY, "cloud", R.EDGE_UNHEALTHY),
    ("auto", True, True, True, ANY, "cloud", R.EDGE_BUSY),
    ("auto", True, True, False, False, "edge", R.IN_RANGE),
    ("auto", True, True, False, True, "range", None),
]
COLUMNS = (R.MODES, (True, False), (True, False), (True, False), (True, False))


def _matches(row, combo) -> bool:
    return all(want == ANY or want == got for want, got in zip(row[:5], combo))


def _facts(has_cloud: bool, healthy: bool, busy: bool, in_range=IN_RANGE_MASK) -> RequestFacts:
    return RequestFacts(3, healthy, BUDGET_S * 2 if busy else 0.0, has_cloud, in_range)


def _expected(target: str, reason: str | None) -> tuple[list[bool], list[str]]:
    if target == "range":
        return IN_RANGE_MASK.tolist(), [R.IN_RANGE if ok else R.OUT_OF_RANGE for ok in IN_RANGE_MASK]
    return [target == "edge"] * 3, [reason] * 3


def test_the_table_covers_every_combination_and_each_reason():
    combos = list(itertools.product(*COLUMNS))
    assert all(any(_matches(row, c) for row in TABLE) for c in combos)
    for row in TABLE:  # no row is shadowed by the rows before it
        assert any(_matches(row, c) and not any(_matches(r, c) for r in TABLE[:TABLE.index(row)]) for c in combos)
    reasons = {row[6] for row in TABLE if row[6]} | {R.IN_RANGE, R.OUT_OF_RANGE}  # the last row's two
    assert reasons == {R.FORCED, R.NO_CLOUD, R.EDGE_UNHEALTHY, R.EDGE_BUSY, R.IN_RANGE, R.OUT_OF_RANGE}


@pytest.mark.parametrize("row", TABLE, ids=lambda row: "-".join(str(v) for v in row[:5]))
def test_decision_table(row):
    for combo in itertools.product(*COLUMNS):
        if not _matches(row, combo) or any(_matches(r, combo) for r in TABLE[:TABLE.index(row)]):
            continue
        mode, has_cloud, healthy, busy, check_range = combo
        policy = RoutingPolicy(mode=mode, latency_budget_s=BUDGET_S, check_range=check_range)
        facts = _facts(has_cloud, healthy, busy)
        plan = plan_route(policy, "classifier", facts)
        edge, reasons = _expected(row[5], row[6])
        assert plan.edge.tolist() == edge and plan.reasons.tolist() == reasons, combo
        assert R.needs_range_check(policy, facts) == (row[5] == "range"), combo
        # The fallbacks: a failed edge batch goes to a configured cloud; a failed cloud leaves its samples to
        # the edge unless the policy forbids it.
        assert plan.cloud_if_edge_fails == has_cloud
        assert plan.edge_if_cloud_fails == (mode != "cloud")
        no_degrade = RoutingPolicy(mode=mode, latency_budget_s=BUDGET_S, check_range=check_range,
                                   degrade_to_edge=False)
        assert not plan_route(no_degrade, "classifier", facts).edge_if_cloud_fails


@pytest.mark.parametrize("budget, wait, busy", [
    (0.05, 0.05, False),  # at the budget: still the edge's
    (0.05, 0.0501, True),
    (None, 1e9, False),  # no budget: never busy
    (0.0, 0.0, False),  # an idle edge has no wait, so it is always tried again
])
def test_the_latency_budget_is_a_strict_bound(budget, wait, busy):
    plan = plan_route(RoutingPolicy(latency_budget_s=budget, check_range=False), "classifier",
                      RequestFacts(2, True, wait, True))
    assert plan.reasons.tolist() == [R.EDGE_BUSY if busy else R.IN_RANGE] * 2
    assert plan.edge.tolist() == [not busy] * 2


@pytest.mark.parametrize("mode, has_cloud, task, thresholds, cascade", [
    ("auto", True, "classifier", {"confidence_threshold": 0.6}, R.LOW_CONFIDENCE),
    ("auto", True, "autoencoder", {"error_threshold": 0.5}, R.HIGH_ERROR),
    ("auto", True, "classifier", {"error_threshold": 0.5}, ""),  # the other task's threshold
    ("auto", True, "autoencoder", {"confidence_threshold": 0.6}, ""),
    ("auto", True, "regressor", {"confidence_threshold": 0.6, "error_threshold": 0.5}, ""),
    ("auto", True, "classifier", {}, ""),  # no threshold
    ("auto", False, "classifier", {"confidence_threshold": 0.6}, ""),  # nowhere to escalate to
    ("edge", True, "classifier", {"confidence_threshold": 0.6}, ""),  # forced modes do not cascade
    ("cloud", True, "autoencoder", {"error_threshold": 0.5}, ""),
])
def test_cascade(mode, has_cloud, task, thresholds, cascade):
    assert plan_route(RoutingPolicy(mode=mode, **thresholds), task, _facts(has_cloud, True, False)).cascade == cascade


@pytest.mark.parametrize("mode, has_cloud, in_range, thresholds, steps", [
    ("auto", True, [True, True], {}, (R.STEP_EDGE,)),
    ("auto", True, [True, False], {}, (R.STEP_CLOUD, R.STEP_EDGE)),
    ("auto", True, [False, False], {}, (R.STEP_CLOUD,)),
    ("auto", True, [True, False], {"confidence_threshold": 0.6}, (R.STEP_CLOUD, R.STEP_EDGE, R.STEP_CASCADE)),
    ("auto", True, [False, False], {"confidence_threshold": 0.6}, (R.STEP_CLOUD,)),  # nothing to cascade
    ("cloud", True, [True, True], {}, (R.STEP_CLOUD,)),
    ("edge", False, [False, False], {}, (R.STEP_EDGE,)),
])
def test_steps_in_the_order_the_executor_starts_them(mode, has_cloud, in_range, thresholds, steps):
    facts = RequestFacts(2, True, 0.0, has_cloud, np.array(in_range))
    assert plan_route(RoutingPolicy(mode=mode, **thresholds), "classifier", facts).steps == steps


def test_the_plan_needs_the_range_check_only_when_it_decides():
    policy = RoutingPolicy()
    with pytest.raises(ValueError, match="in_range"):
        plan_route(policy, "classifier", RequestFacts(2, True, 0.0, True))
    plan = plan_route(policy, "classifier", RequestFacts(2, False, 0.0, True))  # unhealthy: decided without it
    assert plan.reasons.tolist() == [R.EDGE_UNHEALTHY] * 2


def test_a_plan_is_frozen():
    plan = plan_route(RoutingPolicy(), "classifier", _facts(True, True, False))
    with pytest.raises(AttributeError):
        plan.cascade = R.LOW_CONFIDENCE  # type: ignore[misc]


# ---- the executor, through the real gateway ---------------------------------------------------------------------
NEVER = 3600.0  # the health loop's interval: these tests never wait for it
OUT = 100.0  # beyond the tiny package's ap_fixed<16,6> input range [-32, 32)
REQUEST = InferRequest(id=None, parameters={}, inputs=[], outputs=None, binary_output_default=False)


@pytest.fixture(scope="module")
def cloud(tiny, tmp_path_factory):
    """An OIP server on a copy of the tiny package whose preprocessing negates the inputs: another model, whose
    answers differ from the edge's for every sample here. -> (url, reference(x))."""
    pkg, _ = tiny
    copy = tmp_path_factory.mktemp("cloud") / "pkg"
    shutil.copytree(pkg, copy)
    m = load_manifest(copy)
    n_in = m.input.shape[0]
    m.preprocessing = Preprocessing("standard", (0.0,) * n_in, (-1.0,) * n_in)
    m.save(copy)
    backend = EmulatorBackend(copy, engine="csim")
    config = GatewayConfig(policy=RoutingPolicy(mode="edge"), health_interval_s=NEVER, audit=None)
    app, _ = create_gateway(load_manifest(copy), backend, config)
    with ServerThread(app) as server:
        yield server.url, backend.predict  # the backend's lock keeps these calls apart from the server's


def _inputs(n: int = 6, out_of_range=(), seed: int = 3) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-6, 6, size=(n, 16))
    x[list(out_of_range), 0] = OUT
    return x


@contextlib.asynccontextmanager
async def gateway(pkg, policy: RoutingPolicy, cloud_url: str | None):
    """The real EdgeService on the emulated board (real pynq, the runtime's DMA code, the C simulation)."""
    backend = emulated_board_backend(pkg, engine="csim", max_batch=8)
    config = GatewayConfig(
        batcher=BatcherConfig(max_batch_size=8, max_queue_delay_s=0.0, compute_timeout_s=0.5), policy=policy,
        cloud=CloudConfig(cloud_url, retries=0) if cloud_url else None, health_interval_s=NEVER, audit=None,
    )
    service = EdgeService(load_manifest(pkg), backend, config)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        backend.close()


async def _answer(service: EdgeService, x: np.ndarray):
    """(y, params), or the ServingError the request was answered with."""
    try:
        return await service.infer(x, REQUEST, 5.0)
    except ServingError as e:
        return e


def _served_by(y: np.ndarray, edge_y: np.ndarray, cloud_y: np.ndarray) -> list[str]:
    """Which path's answer each row of y is (the two models differ on every sample used here)."""
    assert not (edge_y == cloud_y).all(axis=1).any(), "edge and cloud must differ on every sample"
    return ["edge" if (row == e).all() else "cloud" if (row == c).all() else "?"
            for row, e, c in zip(y, edge_y, cloud_y)]


def _plan_for(service: EdgeService, x: np.ndarray):
    """The plan of the gateway's router for x with the gateway's facts now."""
    x_pre = service.manifest.preprocessing.apply(x)
    return service.router.plan(x_pre, service.edge_healthy, service.batcher.estimated_wait_s(),
                               service.cloud is not None)


@pytest.fixture()
def edge_ref(tiny, dev):
    """The edge's own answers: the package's C simulation on the emulated board, outside any gateway (call it
    before a gateway starts: one accelerator on the board at a time)."""
    pkg, _ = tiny

    def predict(x):
        backend = emulated_board_backend(pkg, engine="csim", max_batch=8)
        try:
            return backend.predict(x)
        finally:
            backend.close()

    return predict


# Plans that need no failure: the executor must answer each sample on the plan's path (the cascade moves the
# edge's unsure samples to the cloud), and say so with the plan's reasons.
SCENARIOS = [
    ("all in range", {}, True, (), "healthy"),
    ("out of range samples go to the cloud", {}, True, (1, 4), "healthy"),
    ("no cloud: the edge answers all", {}, False, (1, 4), "healthy"),
    ("edge forced", {"mode": "edge"}, True, (1, 4), "healthy"),
    ("cloud forced", {"mode": "cloud"}, True, (), "healthy"),
    ("range check off", {"check_range": False}, True, (1,), "healthy"),
    ("edge out of service", {}, True, (), "out"),
    ("cascade", {"confidence_threshold": "median"}, True, (), "healthy"),
    ("cascade and out of range", {"confidence_threshold": "median"}, True, (2,), "healthy"),
]


@pytest.mark.parametrize("name, policy_kw, with_cloud, out_of_range, edge_state", SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_the_executor_follows_the_plan(tiny, dev, cloud, edge_ref, name, policy_kw, with_cloud, out_of_range,
                                       edge_state):
    pkg, _ = tiny
    cloud_url, cloud_ref = cloud
    x = _inputs(out_of_range=out_of_range)
    edge_y, cloud_y = edge_ref(x), cloud_ref(x)
    if policy_kw.get("confidence_threshold") == "median":
        policy_kw = {**policy_kw, "confidence_threshold": float(np.median(R.confidence(edge_y)))}
    policy = RoutingPolicy(**policy_kw)

    async def main():
        async with gateway(pkg, policy, cloud_url if with_cloud else None) as service:
            if edge_state == "out":
                service.monitor.take_out("taken out by the test")
            plan = _plan_for(service, x)
            y, params = await _answer(service, x)
            return plan, y, params

    plan, y, params = asyncio.run(main())
    expected = np.where(plan.edge, "edge", "cloud").astype(object)
    reasons = plan.reasons.copy()
    if plan.cascade:
        edge_idx = np.flatnonzero(plan.edge)
        unsure = edge_idx[R.confidence(edge_y[edge_idx]) < policy.confidence_threshold]
        assert 0 < unsure.size < edge_idx.size  # the median splits them
        expected[unsure], reasons[unsure] = "cloud", R.LOW_CONFIDENCE
    assert _served_by(y, edge_y, cloud_y) == expected.tolist()
    assert params["route_reason"] == ",".join(sorted(set(reasons)))
    counts = ((expected == "edge").sum(), (expected == "cloud").sum())
    assert (params["edge_samples"], params["cloud_samples"]) == counts
    assert "degraded" not in params


@pytest.mark.parametrize("edge_mask", [[True] * 6, [False] * 6, [True, False] * 3, [False, False, True] * 2],
                         ids=["edge", "cloud", "alternate", "last-of-three"])
def test_the_executor_carries_out_the_plan_it_is_given(tiny, dev, cloud, edge_ref, edge_mask):
    """Any plan, not only those the router makes: each sample goes where the plan says (here in-range samples to
    the cloud too), with the plan's reasons, and the plan itself is left as it was."""
    pkg, _ = tiny
    cloud_url, cloud_ref = cloud
    x = _inputs()
    edge_y, cloud_y = edge_ref(x), cloud_ref(x)
    mask = np.array(edge_mask)
    reasons = np.array([f"why-{i}" for i in range(len(x))], dtype=object)
    plan = R.RoutePlan(mask, reasons.copy(), cloud_if_edge_fails=True, edge_if_cloud_fails=True)

    async def main():
        async with gateway(pkg, RoutingPolicy(), cloud_url) as service:
            x_pre = service.manifest.preprocessing.apply(x)
            return await execute(plan, service, x, x_pre, time.perf_counter() + 5.0, service.output.shape)

    outcome = asyncio.run(main())
    assert _served_by(outcome.y, edge_y, cloud_y) == np.where(mask, "edge", "cloud").tolist()
    assert outcome.served.tolist() == np.where(mask, "edge", "cloud").tolist()
    assert outcome.reasons.tolist() == reasons.tolist() and not outcome.degraded
    assert plan.reasons.tolist() == reasons.tolist() and outcome.reasons is not plan.reasons


def test_a_failed_edge_batch_goes_to_the_cloud_and_the_next_plan_avoids_the_edge(tiny, dev, cloud, edge_ref):
    pkg, _ = tiny
    cloud_url, cloud_ref = cloud
    x = _inputs()
    edge_y, cloud_y = edge_ref(x), cloud_ref(x)

    async def main():
        async with gateway(pkg, RoutingPolicy(), cloud_url) as service:
            first_plan = _plan_for(service, x)
            dev.inject("missing")
            first = await _answer(service, x)
            second_plan = _plan_for(service, x)
            second = await _answer(service, x)
            return first_plan, first, second_plan, second

    first_plan, (y1, p1), second_plan, (y2, p2) = asyncio.run(main())
    assert first_plan.steps == (R.STEP_EDGE,) and first_plan.cloud_if_edge_fails
    assert _served_by(y1, edge_y, cloud_y) == ["cloud"] * len(x) and p1["route_reason"] == R.EDGE_FAILED
    assert second_plan.steps == (R.STEP_CLOUD,) and set(second_plan.reasons) == {R.EDGE_UNHEALTHY}
    assert _served_by(y2, edge_y, cloud_y) == ["cloud"] * len(x) and p2["route_reason"] == R.EDGE_UNHEALTHY


def test_a_failed_edge_batch_without_a_cloud_fails_the_request(tiny, dev):
    pkg, _ = tiny

    async def main():
        async with gateway(pkg, RoutingPolicy(), None) as service:
            assert not _plan_for(service, _inputs()).cloud_if_edge_fails
            dev.inject("missing")
            return await _answer(service, _inputs())

    e = asyncio.run(main())
    assert isinstance(e, Unavailable) and "edge failed and no cloud is configured" in str(e)


@pytest.mark.parametrize("policy_kw, out_of_range, reason", [
    ({}, (1, 4), R.OUT_OF_RANGE),  # the out-of-range samples: the edge answers them after all, saturated
    ({"confidence_threshold": "median"}, (), R.LOW_CONFIDENCE),  # the edge's unsure answers stand
])
def test_a_cloud_that_cannot_answer_leaves_its_samples_to_the_edge_marked_degraded(tiny, dev, edge_ref, policy_kw,
                                                                                   out_of_range, reason):
    pkg, _ = tiny
    x = _inputs(out_of_range=out_of_range)
    edge_y = edge_ref(x)
    if policy_kw:
        policy_kw = {"confidence_threshold": float(np.median(R.confidence(edge_y)))}

    async def main():
        async with gateway(pkg, RoutingPolicy(**policy_kw), f"http://127.0.0.1:{free_port()}") as service:
            plan = _plan_for(service, x)
            return plan, await _answer(service, x)

    plan, (y, params) = asyncio.run(main())
    assert plan.edge_if_cloud_fails
    np.testing.assert_array_equal(y, edge_y)  # every answer is the edge's
    assert params["degraded"] is True and "unreachable" in params["degraded_because"]
    assert f"{reason}+{R.CLOUD_DOWN}" in params["route_reason"].split(",")


@pytest.mark.parametrize("policy_kw, edge_state, note", [
    ({"degrade_to_edge": False}, "healthy", "edge: not allowed by the routing policy"),
    ({"mode": "cloud"}, "healthy", "edge: not allowed by the routing policy"),
    ({}, "out", "edge: out of service (taken out by the test)"),
])
def test_when_neither_path_may_answer_the_request_fails_naming_both(tiny, dev, policy_kw, edge_state, note):
    pkg, _ = tiny
    x = _inputs(out_of_range=(1,))

    async def main():
        async with gateway(pkg, RoutingPolicy(**policy_kw), f"http://127.0.0.1:{free_port()}") as service:
            if edge_state == "out":
                service.monitor.take_out("taken out by the test")
            plan = _plan_for(service, x)
            return plan, await _answer(service, x)

    plan, e = asyncio.run(main())
    assert R.STEP_CLOUD in plan.steps
    assert isinstance(e, Unavailable) and str(e).startswith(f"no path could answer: {note}; cloud: ")
