"""SIGTERM or Ctrl-C (SIGINT): finish the current batch, save a checkpoint, stop cleanly.

Schedulers send SIGTERM before they kill a job; people press Ctrl-C. Either way the run ends
after the batch in progress with a checkpoint of it (Composer's checkpoint saver writes it, since
the run's end is moved to now), and `autoresume: true` continues from there. A second Ctrl-C
interrupts at once. With several ranks the request is agreed by an all-reduce at each batch end,
so every rank stops after the same batch.

After training, `listening()` catches the same signals around work that should stop cleanly
too (the GLUE sweeps `train` runs once `fit()` has returned).

Logged keys: none. Afterwards `requested` holds the signal's name (or None).
"""

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from composer.core import Callback, State
from composer.loggers import Logger

from mosaic_pretrain.callbacks.ranks import any_rank

HANDLED = (signal.SIGTERM, signal.SIGINT)


class GracefulStop(Callback):
    def __init__(self):
        self.requested: str | None = None
        self.stopped_after_batch: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.requested = signal.Signals(signum).name

    def fit_start(self, state: State, logger: Logger) -> None:
        self._install()

    @contextmanager
    def listening(self) -> Iterator[None]:
        """Record SIGTERM and Ctrl-C in `requested` inside the block, as during training."""
        self._install()
        try:
            yield
        finally:
            self._restore()

    def _install(self) -> None:
        try:
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: leave signals to the caller
            self._previous.clear()

    def batch_end(self, state: State, logger: Logger) -> None:
        requested = any_rank(state, self.requested is not None)
        if requested and self.requested is None:
            self.requested = "signal on another rank"
        if requested and self.stopped_after_batch is None:
            self.stopped_after_batch = int(state.timestamp.batch)
            state.stop_training()  # the end of the run is now: the checkpoint saver saves it

    def fit_end(self, state: State, logger: Logger) -> None:
        self._restore()

    def close(self, state: State, logger: Logger) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
