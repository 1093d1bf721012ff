"""Edge/cloud pairs in the zoo: each cloud model is a drop-in second opinion for its edge model (same input, classes
and preprocessing, same held-out data) and is measurably stronger on that data, as recorded at training time."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_hls import zoo

PAIRS = [("digits_cnn", "digits_cloud"), ("cancer_mlp", "cancer_cloud")]


@pytest.fixture(scope="module")
def loaded() -> dict:
    """Every paired model loaded once from its shipped files, by name."""
    return {name: zoo.get(name).load_keras() for pair in PAIRS for name in pair}


@pytest.fixture(scope="module")
def measured(loaded) -> dict:
    """Accuracy of every paired model on its held-out split."""
    out = {}
    for name, model in loaded.items():
        m = zoo.get(name)
        x, y = m.eval_data()
        out[name] = float((model.predict(m.preprocessing.apply(x), verbose=0).argmax(1) == y).mean())
    return out


def test_the_pairs_are_the_catalogued_ones():
    found = [(e, zoo.get(e).partner) for e in zoo.names("edge") if zoo.get(e).partner]
    assert sorted(found) == sorted(PAIRS)
    assert sorted(c for _, c in PAIRS) == zoo.names("cloud")


@pytest.mark.parametrize("edge_name,cloud_name", PAIRS)
def test_partners_share_what_a_caller_feeds_them(edge_name, cloud_name):
    edge, cloud = zoo.get(edge_name), zoo.get(cloud_name)
    assert (edge.role, edge.partner) == ("edge", cloud_name)
    assert (cloud.role, cloud.partner) == ("cloud", edge_name)
    assert edge.task == cloud.task == "classifier"
    assert edge.input_shape == cloud.input_shape
    assert edge.classes == cloud.classes and len(edge.classes) >= 2
    assert edge.preprocessing == cloud.preprocessing
    (xe, ye), (xc, yc) = edge.eval_data(), cloud.eval_data()
    np.testing.assert_array_equal(xe, xc)
    np.testing.assert_array_equal(ye, yc)
    assert xe.shape[1:] == edge.input_shape and len(xe) == edge.metrics["n_test"] == cloud.metrics["n_test"]


@pytest.mark.parametrize("edge_name,cloud_name", PAIRS)
def test_cloud_model_is_plain_keras_with_a_softmax_over_the_classes(edge_name, cloud_name, loaded):
    cloud = zoo.get(cloud_name)
    model = loaded[cloud_name]
    assert not [layer for layer in model.layers if type(layer).__module__.startswith("qkeras")]
    assert model.layers[-1].get_config().get("activation") == "softmax"  # logits are the layer before it
    assert model.output_shape == (None, len(cloud.classes))
    x = cloud.preprocessing.apply(cloud.eval_data(16)[0])
    np.testing.assert_allclose(model.predict(x, verbose=0).sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("edge_name,cloud_name", PAIRS)
def test_recorded_accuracies_are_reproduced_and_the_cloud_is_stronger(edge_name, cloud_name, measured):
    for name in (edge_name, cloud_name):
        recorded, n = zoo.get(name).metrics["test_accuracy"], zoo.get(name).metrics["n_test"]
        # the recorded value is rounded to 4 places; a near-tie may fall the other way on another CPU: 1 sample
        assert abs(measured[name] - recorded) <= 1.0 / n + 5e-5, (name, measured[name], recorded)
    assert zoo.get(cloud_name).metrics["test_accuracy"] > zoo.get(edge_name).metrics["test_accuracy"]
    assert measured[cloud_name] > measured[edge_name]


def test_breast_cancer_split_and_scaler():
    from lepton_hls.zoo.cancer_data import train_split

    m = zoo.get("cancer_mlp")
    x, y = m.eval_data()
    x_train, y_train = train_split()
    assert x.shape == (171, 30) and x_train.shape == (398, 30)
    assert m.classes == ("malignant", "benign")
    # stratified: both splits hold malignant (0) tumours in the data set's proportion, 212 of 569
    assert (y == 0).sum() == 64 and (y_train == 0).sum() == 148
    # the scaler is fitted on the training split only: mean 0 and unit variance there, not on the held-out rows
    scaled = m.preprocessing.apply(x_train)
    np.testing.assert_allclose(scaled.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(scaled.std(0), 1.0, atol=1e-9)
    assert m.preprocessing.kind == "standard" and len(m.preprocessing.mean) == 30


def test_a_cloud_model_is_served_not_compiled():
    from cli_runner import run_cli

    r = run_cli("build", "digits_cloud", "--out", "unused")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--model zoo:digits_cloud" in r.stderr and "digits_cnn" in r.stderr
