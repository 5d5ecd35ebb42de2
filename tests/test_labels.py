import numpy as np
import pandas as pd
import pytest

from dualrs.tables import write_table
from dualrs.labels import class_balance_weights, informative_rows, radius_matrix, radius_weights, soft_labels


def test_soft_labels_are_a_softmax_of_radii_over_temperature():
    radii = np.array([[0.1, 0.5, 0.0], [0.0, 0.0, 0.0], [1.2, 0.3, 0.9]])
    q = soft_labels(radii, 0.25)
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    expected = np.exp(radii[2] / 0.25) / np.exp(radii[2] / 0.25).sum()
    np.testing.assert_allclose(q[2], expected)
    np.testing.assert_allclose(q[1], 1 / 3)
    assert (np.argsort(q, axis=1) == np.argsort(radii[:, :], axis=1))[[0, 2]].all()


def test_default_targets_are_the_plain_softmax_of_the_radii():
    radii = np.array([[0.0, 1.0, 2.0], [0.5, 0.5, 0.0]])
    e = np.e
    np.testing.assert_allclose(soft_labels(radii), [[1 / (1 + e + e**2), e / (1 + e + e**2), e**2 / (1 + e + e**2)],
                                                    [e**0.5 / (2 * e**0.5 + 1), e**0.5 / (2 * e**0.5 + 1),
                                                     1 / (2 * e**0.5 + 1)]])
    np.testing.assert_allclose(soft_labels(radii), soft_labels(radii, 1.0))
    assert not np.allclose(soft_labels(radii), soft_labels(radii, 0.25))


def test_low_temperature_tends_to_one_hot_and_high_to_uniform():
    radii = np.random.default_rng(0).uniform(0, 1, size=(50, 3))
    np.testing.assert_allclose(soft_labels(radii, 1e-4), np.eye(3)[radii.argmax(axis=1)], atol=1e-6)
    np.testing.assert_allclose(soft_labels(radii, 1e4), 1 / 3, atol=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        soft_labels(radii, 0.0)


def test_class_balance_is_the_inverse_share_of_each_best_sigma():
    rng = np.random.default_rng(1)
    radii = rng.uniform(0, 1, size=(200, 3)) * np.array([3.0, 1.0, 0.5])  # σ index 0 dominates
    radii[:20] = 0.0  # never certified
    w = class_balance_weights(radii)
    best = radii.argmax(axis=1)
    informative = radii.max(axis=1) > 0
    share = np.array([(best[informative] == k).mean() for k in range(3)])
    np.testing.assert_allclose(w[informative], 1 / share[best[informative]])
    totals = [w[informative & (best == k)].sum() for k in range(3)]
    np.testing.assert_allclose(totals, informative.sum())
    assert np.all(w[:20] == 0)


def test_class_balance_on_a_hand_example():
    radii = np.array([[0.2, 0.1], [0.3, 0.0], [0.5, 0.1], [0.0, 0.4]])  # best: 0, 0, 0, 1 -> q = 3/4, 1/4
    np.testing.assert_allclose(class_balance_weights(radii), [4 / 3, 4 / 3, 4 / 3, 4.0])


def test_informative_rows_are_those_certified_under_some_sigma():
    radii = np.array([[0.0, 0.0, 0.0], [0.0, 0.3, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(informative_rows(radii), [False, True, True, False])


def test_radius_weights_strong_weak_none_on_a_hand_example():
    radii = np.array([[0.2, 0.6, 1.5], [0.4, 0.0, 0.0], [0.0, 0.9, 0.3]])
    sigmas = [0.25, 0.5, 1.0]
    np.testing.assert_allclose(radius_weights(radii, sigmas, "strong"), [1.5, 0.0, 0.3])
    np.testing.assert_allclose(radius_weights(radii, sigmas, "weak"), [0.2, 0.4, 0.0])
    np.testing.assert_allclose(radius_weights(radii, sigmas, "none"), [1.0, 1.0, 1.0])
    # columns need not be sorted (router experts); experts sharing the extreme sigma take the larger radius
    experts = [1.0, 0.25, 1.0]
    np.testing.assert_allclose(radius_weights(radii, experts, "strong"), [1.5, 0.4, 0.3])
    np.testing.assert_allclose(radius_weights(radii, experts, "weak"), [0.6, 0.0, 0.9])
    with pytest.raises(ValueError, match="one sigma per candidate"):
        radius_weights(radii, [0.25, 0.5], "strong")
    with pytest.raises(ValueError, match="radius weight"):
        radius_weights(radii, sigmas, "medium")


def test_radius_matrix_zeroes_wrong_predictions_and_checks_alignment(tmp_path):
    paths = {}
    for sigma, radius, correct in ((0.5, [0.3, 0.7], [1, 0]), (0.25, [0.2, 0.1], [1, 1])):
        frame = pd.DataFrame({"idx": [1, 0], "label": 0, "predict": 0, "count": 1, "pA_lower": 0.9,
                              "radius": radius, "correct": correct})
        paths[sigma] = tmp_path / f"{sigma}.tsv"
        write_table(paths[sigma], frame)
    idx, radii, sigmas = radius_matrix(paths)  # columns in the mapping's order
    assert sigmas == [0.5, 0.25] and list(idx) == [0, 1]
    np.testing.assert_allclose(radii, [[0.0, 0.1], [0.3, 0.2]])
    write_table(paths[0.5], pd.read_csv(paths[0.5], sep="\t").iloc[:1])
    with pytest.raises(ValueError, match="other samples"):
        radius_matrix(paths)
