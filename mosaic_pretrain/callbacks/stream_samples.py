"""How many training samples each stream of a mixture (`train_loader.dataset.streams`) has
given, so a run shows the mixture it really trained on.

Counted on the host from each batch's sample indices. With several ranks, each batch's counts
are summed over ranks on the device as they come (an asynchronous copy and all-reduce of a few
integers, never waited for), so every rank holds the run's totals; they are read back only to
log (every `batch_log_interval` batches and at the end) and to save. Saved with the run's
checkpoints, so a resumed run counts on from where it stopped, on any number of ranks.

Logged keys:
| key | meaning |
|---|---|
| `data/stream/NAME/samples` | samples drawn from stream NAME so far (all ranks) |
| `data/stream/NAME/share` | its share of all samples drawn so far |
"""

import numpy as np
import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

SAMPLES = "sample_index"


class StreamSamples(Callback):
    def __init__(self, names: list[str], batch_log_interval: int = 10):
        self.names = list(names)
        self.batch_log_interval = batch_log_interval
        self.totals = np.zeros(len(self.names), dtype=np.int64)  # all ranks'; as loaded
        self._device_totals: torch.Tensor | None = None  # with several ranks, the live totals

    def fit_start(self, state: State, logger: Logger) -> None:
        if dist.get_world_size() > 1:
            self._device_totals = state.device.tensor_to_device(torch.from_numpy(self.totals))

    def after_dataloader(self, state: State, logger: Logger) -> None:
        samples = state.batch[SAMPLES]  # on the host: the batch moves to the device later
        streams = state.train_dataloader.dataset.stream_of(samples.cpu().numpy())
        counts = np.bincount(streams, minlength=len(self.names))
        if self._device_totals is None:
            self.totals += counts
            return
        batch = torch.from_numpy(counts)
        if self._device_totals.is_cuda:
            batch = batch.pin_memory()  # so the copy below does not wait for the device
        batch = batch.to(self._device_totals.device, non_blocking=True)
        dist.all_reduce(batch)
        self._device_totals += batch

    def batch_end(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch) % self.batch_log_interval == 0:
            self._log(logger)

    def fit_end(self, state: State, logger: Logger) -> None:
        self._log(logger)

    def _current(self) -> list[int]:
        if self._device_totals is not None:
            return self._device_totals.cpu().tolist()
        return self.totals.tolist()

    def _log(self, logger: Logger) -> None:
        counts = self._current()
        drawn = max(sum(counts), 1)
        metrics = {}
        for name, count in zip(self.names, counts, strict=True):
            metrics[f"data/stream/{name}/samples"] = count
            metrics[f"data/stream/{name}/share"] = count / drawn
        logger.log_metrics(metrics)

    def state_dict(self) -> dict:
        return {"names": self.names, "counts": self._current()}

    def load_state_dict(self, state: dict) -> None:
        saved = dict(zip(state["names"], state["counts"], strict=True))
        self.totals = np.array([saved.get(name, 0) for name in self.names], dtype=np.int64)
