"""bert_np.train.metrics: each metric against a worked example computed by hand, or against scipy."""
import math

import numpy as np
import pytest
import scipy.stats

from bert_np.data.tasks import TASKS
from bert_np.train.metrics import (METRICS, accuracy, average_ranks, compute_metrics, f1_score,
                             matthews_corrcoef, pearson, spearman)

# Worked example A, position by position (prediction, label):
#   (1,1) TP  (1,1) TP  (1,0) FP  (0,0) TN  (0,0) TN  (0,1) FN  (1,1) TP  (0,0) TN
#   TP = 3, TN = 3, FP = 1, FN = 1
PRED_A = [1, 1, 1, 0, 0, 0, 1, 0]
LABEL_A = [1, 1, 0, 0, 0, 1, 1, 0]

# Worked example B: labels 4 positives then 6 negatives.
#   positives predicted 1, 1, 0, 0   -> TP = 2, FN = 2
#   negatives predicted 1, 0, 0, 0, 0, 0 -> FP = 1, TN = 5
PRED_B = [1, 1, 0, 0, 1, 0, 0, 0, 0, 0]
LABEL_B = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]


def test_accuracy_is_the_fraction_of_exact_matches():
    # example A: 6 of 8 positions agree
    assert accuracy(PRED_A, LABEL_A) == 6 / 8
    assert accuracy([2, 0, 1], [2, 1, 1]) == 2 / 3


def test_f1_worked_examples():
    # A: F1 = 2 TP / (2 TP + FP + FN) = 6 / (6 + 1 + 1) = 0.75
    #    (precision 3/4, recall 3/4, harmonic mean 3/4)
    assert f1_score(PRED_A, LABEL_A) == pytest.approx(0.75)
    # B: precision = 2/3, recall = 2/4; F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    #    = 2 TP / (2 TP + FP + FN) = 4 / (4 + 1 + 2)
    assert f1_score(PRED_B, LABEL_B) == pytest.approx(4 / 7)


def test_matthews_correlation_worked_examples():
    # A: (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (9 - 1) / sqrt(4 * 4 * 4 * 4)
    #    = 8 / 16 = 0.5
    assert matthews_corrcoef(PRED_A, LABEL_A) == pytest.approx(0.5)
    # B: (2 * 5 - 1 * 2) / sqrt((2+1)(2+2)(5+1)(5+2)) = 8 / sqrt(3 * 4 * 6 * 7) = 8 / sqrt(504)
    assert matthews_corrcoef(PRED_B, LABEL_B) == pytest.approx(8 / math.sqrt(504))


def test_matthews_correlation_is_1_for_perfect_and_minus_1_for_inverted_predictions():
    assert matthews_corrcoef(LABEL_A, LABEL_A) == pytest.approx(1.0)
    assert matthews_corrcoef(1 - np.array(LABEL_A), LABEL_A) == pytest.approx(-1.0)


def test_degenerate_binary_cases_give_zero_not_nan():
    labels = [1, 0, 1, 0]
    # constant predictions: TP + FP = 0 (or TN + FN = 0), the MCC denominator is 0
    assert matthews_corrcoef([0, 0, 0, 0], labels) == 0.0
    assert matthews_corrcoef([1, 1, 1, 1], labels) == 0.0
    # constant labels: the denominator is 0 too
    assert matthews_corrcoef([1, 0, 1, 0], [1, 1, 1, 1]) == 0.0
    # no positive anywhere: 2 TP + FP + FN = 0
    assert f1_score([0, 0, 0], [0, 0, 0]) == 0.0
    # a positive class that is never predicted: TP = 0, F1 = 0
    assert f1_score([0, 0, 0, 0], labels) == 0.0


def test_average_ranks_share_the_mean_rank_of_ties():
    # sorted: 10 -> rank 1; the two 20s span ranks 2 and 3 -> 2.5 each; 30 -> 4
    np.testing.assert_array_equal(average_ranks([20, 10, 30, 20]), [2.5, 1, 4, 2.5])
    # three equal values span ranks 1, 2, 3 -> 2 each
    np.testing.assert_array_equal(average_ranks([5.0, 5.0, 5.0]), [2, 2, 2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pearson_and_spearman_match_scipy(seed):
    rng = np.random.default_rng(seed)
    labels = rng.uniform(0, 5, size=200)
    predictions = labels + rng.normal(scale=1.0, size=200)
    assert pearson(predictions, labels) == pytest.approx(
        scipy.stats.pearsonr(predictions, labels)[0], abs=1e-12)
    assert spearman(predictions, labels) == pytest.approx(
        scipy.stats.spearmanr(predictions, labels)[0], abs=1e-12)


def test_spearman_with_many_ties_matches_scipy():
    # STS-B-like scores rounded to 0.2 and predictions rounded to 0.5: many tied values
    rng = np.random.default_rng(3)
    labels = np.round(rng.uniform(0, 5, size=300) * 5) / 5
    predictions = np.round((labels + rng.normal(scale=1.0, size=300)) * 2) / 2
    assert spearman(predictions, labels) == pytest.approx(
        scipy.stats.spearmanr(predictions, labels)[0], abs=1e-12)


def test_correlation_with_a_constant_is_zero_not_nan():
    assert pearson([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    assert spearman([1.0, 2.0, 3.0], [0.1, 0.1, 0.1]) == 0.0


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_metrics_reject_mismatched_or_empty_inputs(metric):
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        METRICS[metric]([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="no predictions"):
        METRICS[metric]([], [])


def test_binary_metrics_reject_labels_other_than_0_and_1():
    with pytest.raises(ValueError, match="must be 0 or 1"):
        f1_score([0, 2], [0, 1])


def test_correlations_reject_nan():
    with pytest.raises(ValueError, match="non-finite"):
        pearson([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_compute_metrics_reports_the_metrics_of_each_task(name):
    task = TASKS[name]
    labels = [0.5, 4.0, 2.5, 3.0] if task.is_regression else [0, 1, 1, 0]
    result = compute_metrics(name, labels, labels)
    assert list(result) == list(task.metrics)
    assert task.main_metric in result
    assert all(value == pytest.approx(1.0) for value in result.values())


def test_compute_metrics_takes_logits_for_classification():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [-1.0, 1.0], [0.0, -0.5]])  # argmax 0, 1, 1, 0
    result = compute_metrics("mrpc", logits, [0, 1, 0, 0])
    # predictions 0 1 1 0 vs labels 0 1 0 0: TP = 1, FP = 1, FN = 0 -> F1 = 2 / 3; accuracy 3 / 4
    assert result == {"accuracy": 0.75, "f1": pytest.approx(2 / 3)}


def test_compute_metrics_takes_a_regression_column():
    result = compute_metrics("stsb", np.array([[1.0], [2.0], [3.0]]), [1.0, 2.0, 3.5])
    assert result["spearman"] == pytest.approx(1.0)
    assert result["pearson"] == pytest.approx(scipy.stats.pearsonr([1, 2, 3], [1, 2, 3.5])[0])


def test_compute_metrics_cola_reports_mcc():
    assert compute_metrics("cola", PRED_A, LABEL_A) == {"mcc": pytest.approx(0.5)}


def test_one_class_for_every_example_is_flagged_by_its_name():
    """A classifier that answers one class for all (the all-paraphrase MRPC model scores F1 81.2
    and learned nothing) is flagged with that class's name from the task; two classes, a single
    example or a regression task are not flagged."""
    assert compute_metrics("mrpc", [1, 1, 1, 1], [0, 1, 1, 1]) == {
        "accuracy": 0.75, "f1": pytest.approx(6 / 7), "constant_prediction": "equivalent"}
    logits = np.zeros((2, TASKS["tnews"].num_labels))
    logits[:, 3] = 1.0                                                # argmax 3 for both
    assert compute_metrics("tnews", logits, [3, 2])["constant_prediction"] == \
        TASKS["tnews"].label_names[3]
    assert "constant_prediction" not in compute_metrics("mrpc", [1, 0, 1], [1, 0, 0])
    assert "constant_prediction" not in compute_metrics("mrpc", [1], [1])
    assert "constant_prediction" not in compute_metrics("stsb", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
