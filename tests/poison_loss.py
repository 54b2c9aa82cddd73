"""Run `mosaic-pretrain train ARGS...` with the training loss of one batch poisoned.

python tests/poison_loss.py BATCH FACTOR RANK -- train arguments
The loss of training batch BATCH (1-based) is multiplied by FACTOR (nan, inf, 100) on global
rank RANK only (the RANK environment variable, as Composer's launcher sets it; `any` poisons
every rank). A test harness only: it patches the model's loss in this process.
"""

import os
import sys

from mosaic_pretrain.train.composer_model import MLMComposerModel


def poisoned_loss(at_batch: int, factor: float):
    """MLMComposerModel.loss, multiplied by `factor` on the `at_batch`-th training call."""
    calls = {"n": 0}
    original = MLMComposerModel.loss

    def loss(self, outputs, batch):
        value = original(self, outputs, batch)
        if self.training:
            calls["n"] += 1
            if calls["n"] == at_batch:
                return value * factor
        return value

    return loss


if __name__ == "__main__":
    from mosaic_pretrain.cli import main

    batch, factor, rank = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    if rank in ("any", os.environ.get("RANK", "0")):
        MLMComposerModel.loss = poisoned_loss(batch, factor)
    sys.exit(main(sys.argv[sys.argv.index("--") + 1 :]))
