"""The loss guard with several microbatches per step: one host read of the loss per optimizer step
(none per microbatch), and a fault in any microbatch keeps the whole batch off the weights."""

import pytest
import torch
from composer.core import Callback

from mosaic_pretrain.callbacks import loss_guard
from mosaic_pretrain.callbacks.loss_guard import LossGuard, NumericalFault
from tests.test_step_syncs import OpRecorder
from tests.test_train import run

FOUR_MICROBATCHES = ["device_train_microbatch_size=2", "eval_interval=3ba", "save_interval=3ba"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tmp_path_factory.mktemp("data") / "public-domain-en"


class Snapshots(Callback):
    """The weights after every batch."""

    def __init__(self):
        self.after_batch: dict[int, dict] = {}

    def batch_end(self, state, logger):
        weights = state.model.model.state_dict()
        self.after_batch[int(state.timestamp.batch)] = {
            k: v.detach().clone() for k, v in weights.items()
        }


def poison(monkeypatch, microbatch_call: int, factor: float) -> None:
    from mosaic_pretrain.train.composer_model import MLMComposerModel
    from tests.poison_loss import poisoned_loss

    monkeypatch.setattr(MLMComposerModel, "loss", poisoned_loss(microbatch_call, factor))


@pytest.mark.slow
def test_the_loss_is_read_once_per_step_and_never_per_microbatch(corpus, tmp_path, monkeypatch):
    reads: list[int] = []
    syncing: list[str] = []
    read = loss_guard._read_on_host

    def counted_read(tensor):
        reads.append(1)
        return read(tensor)

    original_after_loss = LossGuard.after_loss

    def after_loss(self, state, logger):
        with OpRecorder() as recorder:
            original_after_loss(self, state, logger)
        syncing.extend(recorder.syncing)

    monkeypatch.setattr(loss_guard, "_read_on_host", counted_read)
    monkeypatch.setattr(LossGuard, "after_loss", after_loss)
    run(corpus, tmp_path, "max_duration=3ba", *FOUR_MICROBATCHES)
    assert len(reads) == 3  # 3 steps of 4 microbatches each
    assert syncing == []


@pytest.mark.parametrize("action", ["skip", "stop"])
def test_a_nan_in_one_microbatch_keeps_the_whole_batch_off_the_weights(
    corpus, tmp_path, monkeypatch, action
):
    snapshots = Snapshots()
    monkeypatch.setattr(
        "mosaic_pretrain.train.trainer.build_callbacks", lambda section: [snapshots]
    )
    poison(monkeypatch, microbatch_call=6, factor=float("nan"))  # batch 2, microbatch 2 of 4
    overrides = ("max_duration=3ba", *FOUR_MICROBATCHES, f"loss_guard.action={action}")
    if action == "stop":
        with pytest.raises(NumericalFault, match="the loss is nan while training batch 2;"):
            run(corpus, tmp_path, *overrides)
        assert sorted(snapshots.after_batch) == [1]
        return
    weights, _ = run(corpus, tmp_path, *overrides)
    before, after = snapshots.after_batch[1], snapshots.after_batch[2]
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    later = snapshots.after_batch[3]
    assert not torch.equal(before["head.dense.weight"], later["head.dense.weight"])
