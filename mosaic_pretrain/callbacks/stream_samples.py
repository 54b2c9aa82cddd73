"""How many training samples each stream of a mixture (`train_loader.dataset.streams`) has
given, so a run shows the mixture it really trained on.

Counted on the host from each batch's sample indices (no device work), summed over ranks only
when logged: every `batch_log_interval` batches and at the end of training. The counts are
saved with the run's checkpoints, so a resumed run counts on from where it stopped.

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
        self.counts = np.zeros(len(self.names), dtype=np.int64)  # this rank's

    def after_dataloader(self, state: State, logger: Logger) -> None:
        samples = state.batch[SAMPLES]  # on the host: the batch moves to the device later
        streams = state.train_dataloader.dataset.stream_of(samples.cpu().numpy())
        self.counts += np.bincount(streams, minlength=len(self.names))

    def batch_end(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch) % self.batch_log_interval == 0:
            self._log(state, logger)

    def fit_end(self, state: State, logger: Logger) -> None:
        self._log(state, logger)

    def _log(self, state: State, logger: Logger) -> None:
        total = state.device.tensor_to_device(torch.from_numpy(self.counts.copy()))
        dist.all_reduce(total)
        counts = total.cpu().tolist()
        drawn = max(sum(counts), 1)
        metrics = {}
        for name, count in zip(self.names, counts, strict=True):
            metrics[f"data/stream/{name}/samples"] = count
            metrics[f"data/stream/{name}/share"] = count / drawn
        logger.log_metrics(metrics)

    def state_dict(self) -> dict:
        return {"names": self.names, "counts": self.counts.tolist()}

    def load_state_dict(self, state: dict) -> None:
        saved = dict(zip(state["names"], state["counts"], strict=True))
        self.counts = np.array([saved.get(name, 0) for name in self.names], dtype=np.int64)
