"""Numerical faults caught within the step they happen in: a NaN or infinite loss, and (when
`spike_factor` is set) a loss above `spike_factor` x the mean of the last `window` losses.

`action: stop` ends the run at once with a one-line `NumericalFault` naming the batch; nothing
is saved after the fault, so the last checkpoint is the last good one. `action: skip` drops the
batch instead: its gradients are discarded before the optimizer step (parameters and optimizer
moments stay as they were), and the run stops after `max_skipped_batches` skips.

The check reads the loss on the host once per microbatch (one device sync per step). With several
ranks the verdict is agreed by an all-reduce, so every rank skips or stops together.

Logged keys: `loss_guard/skipped_batches` (running count, when a batch is skipped).
"""

import math
from collections import deque

import torch
from composer.core import Callback, State
from composer.loggers import Logger

from mosaic_pretrain.callbacks.ranks import any_rank
from mosaic_pretrain.errors import MosaicPretrainError


class NumericalFault(MosaicPretrainError):
    """Training produced a non-finite or exploding loss."""


def _as_tensor(loss) -> torch.Tensor:
    if isinstance(loss, dict):
        return sum(loss.values())
    if isinstance(loss, list | tuple):
        return sum(loss)
    return loss


class LossGuard(Callback):
    def __init__(
        self,
        action: str = "stop",
        spike_factor: float | None = None,
        window: int = 50,
        max_skipped_batches: int = 10,
    ):
        self.action = action
        self.spike_factor = spike_factor
        self.window = window
        self.max_skipped_batches = max_skipped_batches
        self.recent: deque[float] = deque(maxlen=window)
        self.skipped = 0
        self._skip_this_batch = False
        self._batch_losses: list[float] = []

    def before_train_batch(self, state: State, logger: Logger) -> None:
        self._skip_this_batch = False
        self._batch_losses = []

    def after_loss(self, state: State, logger: Logger) -> None:
        value = float(_as_tensor(state.loss).detach().float().sum())  # one host sync
        problem = self._problem(value)
        if any_rank(state, problem is not None) and problem is None:
            problem = "a non-finite or spiking loss on another rank"
        if problem is None:
            self._batch_losses.append(value)
            return
        batch = int(state.timestamp.batch) + 1  # the batch being trained, as checkpoints count
        if self.action == "skip" and self.skipped < self.max_skipped_batches:
            self._skip_this_batch = True
            return
        limit = (
            f"; {self.skipped} batches were already skipped (max_skipped_batches)"
            if self.action == "skip"
            else ""
        )
        raise NumericalFault(
            f"{problem} while training batch {batch}{limit}; stopped before updating the "
            "weights, so the last checkpoint is the last good one; lower the learning rate, "
            "or set loss_guard.action=skip to drop such batches"
        )

    def _problem(self, value: float) -> str | None:
        if not math.isfinite(value):
            return f"the loss is {value}"
        if self.spike_factor is not None and len(self.recent) == self.window:
            mean = sum(self.recent) / len(self.recent)
            if value > self.spike_factor * mean:
                return (
                    f"the loss spiked to {value:.4g}, over {self.spike_factor} x the mean "
                    f"{mean:.4g} of the last {self.window} batches (loss_guard.spike_factor)"
                )
        return None

    def after_backward(self, state: State, logger: Logger) -> None:
        if self._skip_this_batch:  # every microbatch's gradients, until the optimizer step
            for parameter in state.model.parameters():
                parameter.grad = None

    def batch_end(self, state: State, logger: Logger) -> None:
        if self._skip_this_batch:
            self.skipped += 1
            logger.log_metrics({"loss_guard/skipped_batches": self.skipped})
        elif self._batch_losses:
            self.recent.append(sum(self._batch_losses) / len(self._batch_losses))

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.recent = deque(state.get("recent", []), maxlen=self.window)
        self.skipped = int(state.get("skipped", 0))
