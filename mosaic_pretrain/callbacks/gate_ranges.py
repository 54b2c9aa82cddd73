"""The trainable gate ranges of expanded activations (xGELU, xSiLU, xATLU and their GLUs), logged
while they train: how far each MLP block has widened its gate beyond [0, 1].

Does nothing for a model without gate ranges. Reads all ranges in one device-to-host copy at
the start, every `batch_log_interval` batches and at the end of training.

Logged keys (one value per MLP block reduced over blocks):
| key | meaning |
|---|---|
| `gate_range/mean` | mean range over blocks |
| `gate_range/std` | spread over blocks (population std; 0 with one block) |
| `gate_range/min`, `gate_range/max` | smallest and largest range |
"""

import torch
from composer.core import Callback, State
from composer.loggers import Logger

from mosaic_pretrain.model.activations import gate_range_parameters


def gate_range_summary(ranges: list[torch.Tensor]) -> dict[str, float]:
    values = torch.stack([value.detach().float() for value in ranges])
    mean, std, low, high = torch.stack(
        [values.mean(), values.std(correction=0), values.min(), values.max()]
    ).tolist()
    return {
        "gate_range/mean": mean,
        "gate_range/std": std,
        "gate_range/min": low,
        "gate_range/max": high,
    }


class GateRangeMonitor(Callback):
    def __init__(self, batch_log_interval: int = 10):
        self.batch_log_interval = batch_log_interval
        self._ranges: list[torch.Tensor] = []

    def fit_start(self, state: State, logger: Logger) -> None:
        self._ranges = list(gate_range_parameters(state.model).values())
        if self._ranges:
            logger.log_metrics(gate_range_summary(self._ranges))

    def batch_end(self, state: State, logger: Logger) -> None:
        batch = int(state.timestamp.batch)
        if self._ranges and batch % self.batch_log_interval == 0:
            logger.log_metrics(gate_range_summary(self._ranges))

    def fit_end(self, state: State, logger: Logger) -> None:
        if self._ranges:  # the final ranges, whatever the interval
            logger.log_metrics(gate_range_summary(self._ranges))
