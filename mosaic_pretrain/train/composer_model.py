"""The Composer wrapper around an MLM model (MosaicBERT or the Hugging Face BERT baseline)."""

import torch
from composer.metrics.nlp import LanguageCrossEntropy
from composer.models import ComposerModel
from torchmetrics import Metric

from mosaic_pretrain.model import MosaicBertForMaskedLM
from mosaic_pretrain.model.padding import IGNORE_INDEX
from mosaic_pretrain.train.flops import training_flops
from mosaic_pretrain.train.microbatches import LAYOUT

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


class MaskedAccuracy(Metric):
    """Accuracy over tokens whose label is not -100, counted without host-device syncs.

    Composer's metric of the same name selects the labelled tokens by boolean indexing, two
    syncs per update; training updates it every microbatch. Here they are counted with masks.
    """

    full_state_update = False

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.ignore_index = ignore_index
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        counted = labels != self.ignore_index
        self.correct += ((logits.argmax(dim=-1) == labels) & counted).sum()
        self.total += counted.sum()

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total


class MLMComposerModel(ComposerModel):
    """Loss from the model itself; eval metrics are MLM cross-entropy and accuracy over masked
    tokens. MosaicBERT's sparse head returns logits for masked tokens only, the baseline for every
    token: both are reduced to (masked tokens, vocab) against their labels."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.takes_layout = isinstance(model, MosaicBertForMaskedLM)
        self.train_metrics = {"MaskedAccuracy": MaskedAccuracy()}
        self.eval_metrics = {
            "LanguageCrossEntropy": LanguageCrossEntropy(ignore_index=IGNORE_INDEX),
            "MaskedAccuracy": MaskedAccuracy(),
        }

    def flops_per_batch(self, batch: dict) -> int:
        """Training FLOPs for this batch, read by Composer's SpeedMonitor to report MFU."""
        return training_flops(self.model.config, batch)

    def forward(self, batch: dict):
        inputs = {name: batch[name] for name in MODEL_INPUTS if name in batch}
        if self.takes_layout and LAYOUT in batch:
            # Worked out on the host when the batch was split, and moved to the device with the
            # microbatch (train/microbatches.py); moved here only for callers of our own.
            layout = batch[LAYOUT]
            device = batch["input_ids"].device
            if layout.device != device:
                layout = layout.to(device, non_blocking=True)
            inputs["layout"] = layout
        return self.model(**inputs)

    def loss(self, outputs, batch: dict) -> torch.Tensor:
        return outputs.loss

    def eval_forward(self, batch: dict, outputs=None):
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict:
        return self.train_metrics if is_train else self.eval_metrics

    def update_metric(self, batch: dict, outputs, metric) -> None:
        logits = outputs.logits
        labels = batch["labels"]
        if logits.dim() == 3:  # dense (B, S, V): every position, -100 where not masked
            logits, labels = logits.flatten(0, 1), labels.flatten()
        else:  # sparse (M, V): the masked positions, in row-major order
            labels = labels.flatten().index_select(0, outputs.masked_token_indices)
        metric.update(logits, labels)
