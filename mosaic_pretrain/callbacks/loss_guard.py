"""Numerical faults caught before the optimizer step they would poison: a NaN or infinite loss,
and (when `spike_factor` is set) a batch loss above `spike_factor` x the mean of the last
`window` batch losses.

`action: stop` ends the run at once with a one-line `NumericalFault` naming the batch; nothing
is saved after the fault, so the last checkpoint is the last good one. `action: skip` drops the
batch instead: its gradients are discarded before the optimizer step (parameters and optimizer
moments stay as they were), and the run stops after `max_skipped_batches` skips.

The batch loss is the mean over the global batch, each microbatch's loss weighed as gradient
accumulation weighs it (`weigh`: its masked tokens), so it is the number the run logs. It is
summed on the device as the microbatches go, and read on the host once per optimizer step,
after the last backward: one device sync per step, however many microbatches. With several
ranks the sums are all-reduced first (one collective per step), so every rank sees the same
global loss and stops or skips together. A NaN anywhere in a batch makes its sum NaN.

Logged keys: `loss_guard/skipped_batches` (running count, when a batch is skipped).
"""

import math
from collections import deque
from collections.abc import Callable

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from mosaic_pretrain.errors import MosaicPretrainError


class NumericalFault(MosaicPretrainError):
    """Training produced a non-finite or exploding loss."""


def _as_tensor(loss) -> torch.Tensor:
    if isinstance(loss, dict):
        return sum(loss.values())
    if isinstance(loss, list | tuple):
        return sum(loss)
    return loss


def _equal_weights(batch) -> float:
    return 1.0


def _read_on_host(values: torch.Tensor) -> list[float]:
    """The guard's one wait for the device per step."""
    return values.tolist()


class LossGuard(Callback):
    def __init__(
        self,
        action: str = "stop",
        spike_factor: float | None = None,
        window: int = 50,
        max_skipped_batches: int = 10,
        weigh: Callable[[dict], float] = _equal_weights,
    ):
        self.action = action
        self.spike_factor = spike_factor
        self.window = window
        self.max_skipped_batches = max_skipped_batches
        self.weigh = weigh  # a microbatch's weight in the batch loss, known on the host
        self.recent: deque[float] = deque(maxlen=window)
        self.skipped = 0
        self._skip_this_batch = False
        self._batch_loss: float | None = None
        self._sums: torch.Tensor | None = None  # (weighted loss, weight) on the device

    def before_train_batch(self, state: State, logger: Logger) -> None:
        self._skip_this_batch = False
        self._batch_loss = None
        self._sums = None

    def after_loss(self, state: State, logger: Logger) -> None:
        loss = _as_tensor(state.loss).detach().float().sum()
        weight = float(self.weigh(state.batch))
        # Device arithmetic only (a fill, not a copy from the host): no sync per microbatch.
        sums = torch.stack([loss * weight, loss.new_full((), weight)])
        self._sums = sums if self._sums is None else self._sums + sums

    def after_train_batch(self, state: State, logger: Logger) -> None:
        if self._sums is None:
            return
        own_fault = (~torch.isfinite(self._sums[:1])).float()
        summed = torch.cat([self._sums, own_fault])
        if dist.get_world_size() > 1:
            dist.all_reduce(summed, reduce_operation="SUM")
        total, weight, faults, own = _read_on_host(torch.cat([summed, own_fault]))
        value = total / weight if weight else total
        problem = self._problem(value)
        if problem is not None and faults and not own:
            problem = f"a non-finite loss on another rank ({int(faults)} of them)"
        if problem is None:
            self._batch_loss = value
            return
        batch = int(state.timestamp.batch) + 1  # the batch being trained, as checkpoints count
        if self.action == "skip" and self.skipped < self.max_skipped_batches:
            self._skip_this_batch = True
            for parameter in state.model.parameters():  # no update from this batch
                parameter.grad = None
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

    def batch_end(self, state: State, logger: Logger) -> None:
        if self._skip_this_batch:
            self.skipped += 1
            logger.log_metrics({"loss_guard/skipped_batches": self.skipped})
        elif self._batch_loss is not None:
            self.recent.append(self._batch_loss)

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.recent = deque(state.get("recent", []), maxlen=self.window)
        self.skipped = int(state.get("skipped", 0))
