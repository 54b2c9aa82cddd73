"""GLUE metrics over a whole evaluation set, computed in float64 with numpy.

Each is a function of (predictions, labels): class ids for classification, floats for regression.
`PredictionMetric` collects a job's predictions across batches for Composer and applies one of
them at the end, so a score never depends on how the dev set was batched.
"""

from collections.abc import Callable

import numpy as np
import torch
from torchmetrics import Metric


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions == labels))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (id 1), as GLUE reports it for MRPC and QQP; 0 when undefined."""
    true_positive = np.sum((predictions == 1) & (labels == 1))
    predicted, actual = np.sum(predictions == 1), np.sum(labels == 1)
    if predicted + actual == 0:
        return 0.0
    return float(2 * true_positive / (predicted + actual))


def matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (CoLA), for any number of classes; 0 when a side is constant."""
    classes = np.union1d(predictions, labels)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(
        confusion, (np.searchsorted(classes, labels), np.searchsorted(classes, predictions)), 1
    )
    total, correct = confusion.sum(), np.trace(confusion)
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    numerator = correct * total - true_counts @ predicted_counts
    denominator = np.sqrt(
        (total**2 - predicted_counts @ predicted_counts) * (total**2 - true_counts @ true_counts)
    )
    return float(numerator / denominator) if denominator > 0 else 0.0


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation (STS-B); 0 when either side is constant."""
    x = predictions.astype(np.float64) - predictions.mean()
    y = labels.astype(np.float64) - labels.mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denominator) if denominator > 0 else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(values)]))
    ranks = np.empty(len(values), dtype=np.float64)
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2  # mean of ranks start+1 .. end
    return ranks


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation (STS-B): Pearson of the tie-averaged ranks."""
    return pearson(_average_ranks(predictions), _average_ranks(labels))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews": matthews,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(names, predictions, labels) -> dict[str, float]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return {name: METRICS[name](predictions, labels) for name in names}


def predictions_from_logits(logits: torch.Tensor, regression: bool) -> torch.Tensor:
    """(B, num_labels) -> (B,): the regression output, or the most likely class."""
    return logits[:, 0].float() if regression else logits.argmax(dim=-1)


class PredictionMetric(Metric):
    """Keeps every prediction and label of an evaluation; computes one metric over all of them."""

    full_state_update = False

    def __init__(self, name: str, regression: bool):
        super().__init__()
        self.name = name
        self.regression = regression
        self.add_state("predictions", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.predictions.append(predictions_from_logits(logits.detach(), self.regression).cpu())
        self.labels.append(labels.detach().cpu())

    def compute(self) -> torch.Tensor:
        predictions = _concatenated(self.predictions)
        labels = _concatenated(self.labels)
        if labels.numel() == 0:
            return torch.tensor(float("nan"))
        value = METRICS[self.name](predictions.double().numpy(), labels.double().numpy())
        return torch.tensor(value, dtype=torch.float64)


def _concatenated(state) -> torch.Tensor:
    if isinstance(state, torch.Tensor):  # already gathered across ranks
        return state.cpu()
    return torch.cat(state) if state else torch.empty(0)
