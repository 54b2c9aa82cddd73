"""Record what the Trainer computes for its first batch: initial weights, the rank's whole batch,
and the gradients the optimizer is about to apply.

python tests/gradient_recorder.py OUT_DIR -- train arguments
runs `mosaic-pretrain train ARGS...` and writes OUT_DIR/rank{RANK}.pt. A test harness only: it
adds the recorder to the run's callbacks in this process.
"""

import os
import sys
from pathlib import Path

import torch
from composer.core import Callback, State
from composer.loggers import Logger

from mosaic_pretrain.train.microbatches import LAYOUT


def _unwrapped(state: State) -> torch.nn.Module:
    model = state.model
    return getattr(model, "module", model)  # DDP keeps the model as .module


class GradientRecorder(Callback):
    """After the first batch's backward passes (every microbatch, and DDP's all-reduce), before
    the optimizer step: the gradients, next to the weights they were computed at."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.record: dict = {}

    def fit_start(self, state: State, logger: Logger) -> None:
        model = _unwrapped(state)
        self.record["weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def batch_start(self, state: State, logger: Logger) -> None:
        if "batch" not in self.record:
            batch = {k: v for k, v in state.batch.items() if k != LAYOUT}
            self.record["batch"] = {k: v.detach().cpu().clone() for k, v in batch.items()}

    def after_train_batch(self, state: State, logger: Logger) -> None:
        if "gradients" in self.record:
            return
        self.record["gradients"] = {
            name: parameter.grad.detach().cpu().clone()
            for name, parameter in _unwrapped(state).named_parameters()
            if parameter.grad is not None
        }
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, self.out / f"rank{os.environ.get('RANK', '0')}.pt")


def recording_into(out: Path):
    """`build_callbacks` of the train builders, with a GradientRecorder added."""
    from mosaic_pretrain.train import trainer

    original = trainer.build_callbacks

    def build_callbacks(section):
        return [*original(section), GradientRecorder(out)]

    return build_callbacks


if __name__ == "__main__":
    from mosaic_pretrain.cli import main
    from mosaic_pretrain.train import trainer

    trainer.build_callbacks = recording_into(Path(sys.argv[1]))
    sys.exit(main(sys.argv[sys.argv.index("--") + 1 :]))
