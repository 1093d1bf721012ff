"""The cascade's escalation criteria, its accuracy–offload frontier and the choice of a threshold, against
brute-force evaluation of every threshold; and the latency model against direct simulation of the mixture."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_host.serving import cascade_criteria as C
from lepton_host.serving.errors import BadRequest
from lepton_hls.cascade_frontier import CalibrationError, Target, check_target, choose, frontier
from lepton_hls.cascade_latency import LatencyModel


def test_criteria_on_known_answers():
    one_hot = np.array([[0.0, 1.0, 0.0, 0.0]])
    uniform = np.full((1, 4), 0.25)
    two_way = np.array([[0.5, 0.5, 0.0, 0.0]])
    for y, mp, mg, en in ((one_hot, 1.0, 1.0, 1.0), (uniform, 0.25, 0.0, 0.0), (two_way, 0.5, 0.0, 0.5)):
        assert C.max_probability(y)[0] == pytest.approx(mp)
        assert C.margin(y)[0] == pytest.approx(mg)
        assert C.entropy_confidence(y)[0] == pytest.approx(en)
    logits = np.array([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # not probabilities: a softmax first
    assert C.max_probability(logits)[0] > 0.99 and C.max_probability(logits)[1] == pytest.approx(1 / 3)


def test_criterion_checked_against_the_task():
    assert C.criterion(None, "classifier").name == "max_probability"
    assert C.criterion(None, "autoencoder").name == "reconstruction_error"
    with pytest.raises(BadRequest, match="applies to classifiers"):
        C.criterion("margin", "autoencoder")
    with pytest.raises(BadRequest, match="unknown cascade criterion"):
        C.criterion("confidence", "classifier")


def _case(n=400, seed=0):
    rng = np.random.default_rng(seed)
    score = np.round(rng.uniform(0, 1, n), 2)  # ties on purpose
    edge_ok = rng.uniform(0, 1, n) < 0.5 + 0.5 * score
    cloud_ok = rng.uniform(0, 1, n) < 0.97
    pre = rng.uniform(0, 1, n) < 0.03
    return score, edge_ok, cloud_ok, pre


@pytest.mark.parametrize("name", ["max_probability", "reconstruction_error"])
def test_frontier_equals_brute_force(name):
    crit = C.CRITERIA[name]
    score, edge_ok, cloud_ok, pre = _case()
    f = frontier(crit, score, edge_ok, cloud_ok, pre)
    for i, t in enumerate(f.thresholds):
        esc = (score > t if crit.escalate_above else score < t) & ~pre
        assert f.accuracy[i] == pytest.approx(np.where(esc | pre, cloud_ok, edge_ok).mean(), abs=1e-12)
        assert f.offload[i] == pytest.approx((esc | pre).mean(), abs=1e-12)
        assert f.escalated[i] == pytest.approx(esc.mean(), abs=1e-12)
    # From no escalation to all of it; no threshold sits on a score (a tie would be a coin toss).
    assert f.escalated[0] == 0 and f.offload[-1] == 1
    assert not np.isin(f.thresholds, score[~pre]).any()


def test_choice_meets_each_kind_of_target():
    score, edge_ok, cloud_ok, pre = _case()
    fs = [frontier(C.CRITERIA[n], score, edge_ok, cloud_ok, pre) for n in ("max_probability", "margin")]
    pre_frac = pre.mean()
    everything = [(f.accuracy[i], f.offload[i]) for f in fs for i in range(f.thresholds.size)]

    target = cloud_ok.mean() - 0.003
    p, met = choose(fs, Target(accuracy=target), pre_frac)
    assert met and p.cascade_accuracy >= target
    assert p.offload_fraction == min(o for a, o in everything if a >= target)

    p, met = choose(fs, Target(max_offload=0.2), pre_frac)
    assert met and p.offload_fraction <= 0.2
    assert p.cascade_accuracy == max(a for a, o in everything if o <= 0.2)

    mean = lambda esc, pre_r: 1.0 + 10.0 * (esc + pre_r)  # noqa: E731 (ms-like units)
    p, met = choose(fs, Target(mean_latency_s=3.0), pre_frac, mean)
    assert met and mean(p.escalated_fraction, pre_frac) <= 3.0

    p, met = choose(fs, Target(accuracy=1.0), pre_frac)  # out of reach: the most accurate point, flagged
    assert not met and p.cascade_accuracy == max(a for a, o in everything)


def test_choice_is_the_same_every_time_and_in_any_sample_order():
    score, edge_ok, cloud_ok, pre = _case(seed=3)
    crit = C.CRITERIA["max_probability"]
    first, _ = choose([frontier(crit, score, edge_ok, cloud_ok, pre)], Target(max_offload=0.15), pre.mean())
    perm = np.random.default_rng(9).permutation(score.size)
    again, _ = choose([frontier(crit, score[perm], edge_ok[perm], cloud_ok[perm], pre[perm])],
                      Target(max_offload=0.15), pre.mean())
    assert first == again


def test_targets_are_checked():
    for bad in (Target(accuracy=98.0), Target(max_offload=-0.1), Target(mean_latency_s=0.0),
                Target(accuracy=0.9, max_offload=0.1)):
        with pytest.raises(CalibrationError):
            check_target(bad)


def test_latency_model_matches_a_simulated_mixture():
    rng = np.random.default_rng(1)
    edge = rng.gamma(2.0, 0.5e-3, 300)
    cloud = 5e-3 + rng.gamma(3.0, 1e-3, 200)
    m = LatencyModel(edge, cloud)
    esc, pre = 0.15, 0.05
    assert m.mean_s(esc, pre) == pytest.approx((1 - esc - pre) * edge.mean() + esc * (edge.mean() + cloud.mean())
                                               + pre * cloud.mean())
    # Draw requests the way the gateway serves them and compare the tail.
    k = 400_000
    path = rng.choice(3, k, p=[1 - esc - pre, esc, pre])
    e, c = rng.choice(edge, k), rng.choice(cloud, k)
    sim = np.where(path == 0, e, np.where(path == 1, e + c, c))
    assert m.quantile_s(0.99, esc, pre) == pytest.approx(np.quantile(sim, 0.99), rel=0.03)
    assert m.quantile_s(0.5, 0.0, 0.0) == pytest.approx(np.quantile(edge, 0.5), rel=0.02)
