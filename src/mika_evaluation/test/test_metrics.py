"""Metrics against values computed by hand (and scikit-learn where it is installed)."""
import math

import numpy as np
import pytest

from mika_evaluation import metrics

TRUTH = [0, 0, 0, 1, 1, 2]
PREDICTED = [0, 0, 1, 1, 2, 2]


def test_confusion_matrix_rows_are_truth():
    assert metrics.confusion_matrix(TRUTH, PREDICTED, 3).tolist() == [
        [2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_classification_metrics_by_hand():
    matrix = metrics.confusion_matrix(TRUTH, PREDICTED, 3)
    assert metrics.accuracy(matrix) == pytest.approx(4 / 6)
    assert metrics.per_class_recall(matrix) == pytest.approx([2 / 3, 1 / 2, 1.0])
    # F1: 0.8, 0.5, 2/3
    assert metrics.macro_f1(matrix) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # p_o = 2/3, p_e = (3*2 + 2*2 + 1*2) / 36 = 1/3
    assert metrics.cohen_kappa(matrix) == pytest.approx(0.5)
    # (4*6 - 12) / sqrt((36 - 12) * (36 - 14))
    assert metrics.matthews_correlation(matrix) == pytest.approx(12 / math.sqrt(24 * 22))


def test_absent_classes_do_not_count_and_degenerate_cases_are_defined():
    summary = metrics.classification_summary([0, 0], [0, 0], ['a', 'b', 'c'])
    assert summary['accuracy'] == 1.0 and summary['macro_f1'] == 1.0
    assert summary['per_class_recall'] == {'a': 1.0, 'b': None, 'c': None}
    assert summary['matthews_correlation'] == 0.0  # undefined with one class: 0
    assert math.isnan(metrics.classification_summary([], [], ['a'])['accuracy'])


def test_agrees_with_scikit_learn_on_random_labels():
    sk = pytest.importorskip('sklearn.metrics')
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 7, 500)
    predicted = np.where(rng.random(500) < 0.6, truth, rng.integers(0, 7, 500))
    matrix = metrics.confusion_matrix(truth, predicted, 7)
    assert metrics.macro_f1(matrix) == pytest.approx(sk.f1_score(truth, predicted,
                                                                 average='macro'))
    assert metrics.cohen_kappa(matrix) == pytest.approx(sk.cohen_kappa_score(truth, predicted))
    assert metrics.matthews_correlation(matrix) == pytest.approx(
        sk.matthews_corrcoef(truth, predicted))


TIMES = np.arange(10, dtype=float)
TRUTH_LINE = ['a'] * 4 + ['b'] * 5 + [None]
STATE_LINE = ['a', None, 'b', 'a', 'a', 'a', 'b', 'b', 'a', 'b']


def test_coverage_counts_labelled_time_only():
    assert metrics.coverage(TRUTH_LINE, STATE_LINE) == pytest.approx(8 / 9)


def test_flips_exclude_the_reaction_to_a_true_change():
    # stretch a: a->b, b->a (2 flips); stretch b: a->b is the reaction, b->a a flip
    assert metrics.flips_per_minute(TIMES, TRUTH_LINE, STATE_LINE) == pytest.approx(
        3 / (9 / 60))


def test_reaction_time_after_a_true_change():
    reaction = metrics.reaction_times(TIMES, TRUTH_LINE, STATE_LINE)
    assert reaction['changes'] == 1 and reaction['reached'] == 1
    assert reaction['median_s'] == pytest.approx(2.0)
    never = metrics.reaction_times(TIMES, TRUTH_LINE, ['a'] * 10)
    assert never['missed'] == 1 and never['median_s'] is None


def test_latency_summary_in_milliseconds():
    summary = metrics.latency_summary([0.001, 0.002, 0.003])
    assert summary['count'] == 3 and summary['mean_ms'] == pytest.approx(2.0)
    assert summary['max_ms'] == pytest.approx(3.0)


def test_flips_in_one_stretch_skip_gaps_and_the_first_reaction():
    assert metrics.flips_in_stretch(['b', None, 'a', 'a', 'b', 'a'], 'a') == 2
    assert metrics.flips_in_stretch([None, 'a', 'a'], 'a') == 0


def test_bootstrap_interval_brackets_the_statistic_and_narrows_with_more_rows():
    rng = np.random.default_rng(3)
    few, many = list(rng.normal(0.05, 0.2, 20)), list(rng.normal(0.05, 0.2, 2000))
    low, high = metrics.bootstrap_interval(np.mean, few, rounds=500)
    assert low < np.mean(few) < high
    low_many, high_many = metrics.bootstrap_interval(np.mean, many, rounds=500)
    assert low_many < 0.05 < high_many and high_many - low_many < (high - low) / 5
