"""The figures of a run's closing summary, gathered as the run logs them: the last training loss
and accuracy, the last evaluation, this session's wall clock, tokens and MFU. Logs nothing."""

import time

from composer.core import State
from composer.loggers import Logger, LoggerDestination

from mosaic_pretrain.callbacks.console import (
    EVAL_ACCURACY,
    EVAL_LOSS,
    MFU,
    TOKENS_PER_SECOND,
    TRAIN_ACCURACY,
    TRAIN_LOSS,
)
from mosaic_pretrain.callbacks.metrics_file import finite


class RunTally(LoggerDestination):
    def __init__(self):
        self.train: dict[str, float] = {}  # loss, masked_accuracy: the last logged
        self.train_batch: int | None = None
        self.eval: dict[str, float] = {}
        self.eval_batch: int | None = None
        self.step_speeds: list[float] = []  # real tokens/s of each speed window logged
        self.mfus: list[float] = []
        self.started: float | None = None
        self.wall_seconds = 0.0
        self.first = {"batch": 0, "sample": 0, "token": 0}
        self._train_logged = False  # since the last batch ended

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        for key, name in ((TRAIN_LOSS, "loss"), (TRAIN_ACCURACY, "masked_accuracy")):
            if key in metrics:
                self.train[name] = finite(metrics[key])
                self._train_logged = True
        for key, name in ((EVAL_LOSS, "loss"), (EVAL_ACCURACY, "masked_accuracy")):
            if key in metrics:
                self.eval[name] = finite(metrics[key])
        for key, into in ((TOKENS_PER_SECOND, self.step_speeds), (MFU, self.mfus)):
            value = finite(metrics.get(key))
            if value is not None:
                into.append(value)

    def fit_start(self, state: State, logger: Logger) -> None:
        self.started = time.monotonic()
        stamp = state.timestamp
        self.first = {key: int(getattr(stamp, key)) for key in ("batch", "sample", "token")}

    def batch_end(self, state: State, logger: Logger) -> None:
        if self._train_logged:
            self.train_batch = int(state.timestamp.batch)
            self._train_logged = False

    def eval_end(self, state: State, logger: Logger) -> None:
        self.eval_batch = int(state.timestamp.batch)

    def fit_end(self, state: State, logger: Logger) -> None:
        if self.started is not None:
            self.wall_seconds = time.monotonic() - self.started

    def session(self, state: State) -> dict:
        """What this session trained: batches, samples and real tokens, and their rate."""
        stamp = state.timestamp
        now = {key: int(getattr(stamp, key)) for key in ("batch", "sample", "token")}
        plural = {"batch": "batches", "sample": "samples", "token": "tokens"}
        done = {plural[key]: now[key] - self.first[key] for key in now}
        done["wall_seconds"] = round(self.wall_seconds, 1)
        rate = done["tokens"] / self.wall_seconds if self.wall_seconds > 0 else None
        done["real_tokens_per_second"] = rate
        return done

    def mean(self, values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None
