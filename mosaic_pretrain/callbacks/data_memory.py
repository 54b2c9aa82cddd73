"""Frees the streaming datasets' shared memory when the Trainer closes.

Streaming keeps a dataset's shared memory until the interpreter exits; a process that trains
several runs (`mosaic-pretrain ablate`) would otherwise hold every earlier run's file
descriptors and /dev/shm segments. Logged keys: none.
"""

from composer.core import Callback, State
from composer.loggers import Logger


def _datasets(state: State) -> list:
    loaders = [
        state.train_dataloader,
        *(evaluator.dataloader.dataloader for evaluator in state.evaluators),
    ]
    return [getattr(loader, "dataset", None) for loader in loaders if loader is not None]


class ReleaseDataMemory(Callback):
    def close(self, state: State, logger: Logger) -> None:
        for dataset in _datasets(state):
            release = getattr(dataset, "release_shared_memory", None)
            if release is not None:
                release()
