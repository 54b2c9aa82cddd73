"""GLUE metrics against hand computations on known predictions."""

import math

import numpy as np
import pytest
import torch

from mosaic_pretrain.glue.metrics import PredictionMetric, compute_metrics

# Ten binary predictions. Confusion (rows = truth, columns = prediction):
# truth 1: 4 predicted 1 (TP), 2 predicted 0 (FN); truth 0: 1 predicted 1 (FP), 3 predicted 0 (TN).
LABELS = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
PREDICTIONS = [1, 1, 1, 1, 0, 0, 1, 0, 0, 0]


def test_classification_metrics_match_the_hand_computation():
    tp, fn, fp, tn = 4, 2, 1, 3
    scores = compute_metrics(("accuracy", "f1", "matthews"), PREDICTIONS, LABELS)
    assert scores["accuracy"] == pytest.approx(7 / 10)
    assert scores["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))  # 8/11
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert scores["matthews"] == pytest.approx(mcc)  # 10 / sqrt(5*6*4*5) = 0.4082...
    assert scores["matthews"] == pytest.approx(0.408248, abs=1e-6)


def test_degenerate_cases_score_zero_instead_of_nan():
    constant = [1, 1, 1, 1]
    scores = compute_metrics(("matthews", "pearson", "spearman"), constant, [0, 1, 0, 1])
    assert scores == {"matthews": 0.0, "pearson": 0.0, "spearman": 0.0}
    assert compute_metrics(("f1",), [0, 0], [0, 0]) == {"f1": 0.0}


def test_matthews_for_three_classes_matches_its_definition():
    # Gorodkin's multiclass form: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))
    labels = [0, 0, 1, 1, 2, 2]
    predictions = [0, 1, 1, 1, 2, 0]
    c, s = 4, 6
    t = [2, 2, 2]  # true counts
    p = [2, 3, 1]  # predicted counts
    expected = (c * s - sum(a * b for a, b in zip(p, t, strict=True))) / math.sqrt(
        (s**2 - sum(a * a for a in p)) * (s**2 - sum(b * b for b in t))
    )
    assert compute_metrics(("matthews",), predictions, labels)["matthews"] == pytest.approx(
        expected
    )


def test_regression_metrics_match_the_hand_computation():
    labels = [1.0, 2.0, 3.0, 4.0, 5.0]
    predictions = [1.0, 3.0, 2.0, 5.0, 5.0]
    scores = compute_metrics(("pearson", "spearman"), predictions, labels)
    x, y = np.array(predictions), np.array(labels)
    pearson = ((x - x.mean()) * (y - y.mean())).sum() / math.sqrt(
        ((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum()
    )
    assert scores["pearson"] == pytest.approx(pearson)
    # Ranks of predictions with the tie at 5.0 averaged: [1, 3, 2, 4.5, 4.5]; labels: [1..5].
    rank_x, rank_y = np.array([1, 3, 2, 4.5, 4.5]), np.arange(1.0, 6.0)
    spearman = ((rank_x - 3) * (rank_y - 3)).sum() / math.sqrt(
        ((rank_x - 3) ** 2).sum() * ((rank_y - 3) ** 2).sum()
    )
    assert scores["spearman"] == pytest.approx(spearman)
    assert compute_metrics(("spearman",), [3.0, 1.0, 2.0], [30, 10, 20])["spearman"] == 1.0


def test_the_composer_metric_over_batches_equals_the_metric_over_all_predictions():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(23, 3, generator=generator)
    labels = torch.randint(0, 3, (23,), generator=generator)
    metric = PredictionMetric("accuracy", regression=False)
    for start in range(0, 23, 5):  # uneven batches
        metric.update(logits[start : start + 5], labels[start : start + 5])
    expected = compute_metrics(("accuracy",), logits.argmax(-1).numpy(), labels.numpy())
    assert float(metric.compute()) == pytest.approx(expected["accuracy"])
    regression = PredictionMetric("pearson", regression=True)
    scores = torch.randn(10, 1, generator=generator)
    targets = torch.randn(10, generator=generator)
    regression.update(scores[:4], targets[:4])
    regression.update(scores[4:], targets[4:])
    expected = compute_metrics(("pearson",), scores[:, 0].numpy(), targets.numpy())
    assert float(regression.compute()) == pytest.approx(expected["pearson"], abs=1e-6)
