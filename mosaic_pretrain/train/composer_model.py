"""The Composer wrapper around an MLM model (MosaicBERT or the Hugging Face BERT baseline)."""

import torch
from composer.metrics.nlp import LanguageCrossEntropy, MaskedAccuracy
from composer.models import ComposerModel

from mosaic_pretrain.model.modeling import IGNORE_INDEX
from mosaic_pretrain.train.flops import training_flops

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


class MLMComposerModel(ComposerModel):
    """Loss from the model itself; eval metrics are MLM cross-entropy and accuracy over masked
    tokens. MosaicBERT's sparse head returns logits for masked tokens only, the baseline for every
    token: both are reduced to (masked tokens, vocab) against their labels."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.train_metrics = {"MaskedAccuracy": MaskedAccuracy(ignore_index=IGNORE_INDEX)}
        self.eval_metrics = {
            "LanguageCrossEntropy": LanguageCrossEntropy(ignore_index=IGNORE_INDEX),
            "MaskedAccuracy": MaskedAccuracy(ignore_index=IGNORE_INDEX),
        }

    def flops_per_batch(self, batch: dict) -> int:
        """Training FLOPs for this batch, read by Composer's SpeedMonitor to report MFU."""
        return training_flops(self.model.config, batch)

    def forward(self, batch: dict):
        return self.model(**{name: batch[name] for name in MODEL_INPUTS if name in batch})

    def loss(self, outputs, batch: dict) -> torch.Tensor:
        return outputs.loss

    def eval_forward(self, batch: dict, outputs=None):
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict:
        return self.train_metrics if is_train else self.eval_metrics

    def update_metric(self, batch: dict, outputs, metric) -> None:
        logits = outputs.logits
        labels = batch["labels"]
        if logits.dim() == 3:  # dense (B, S, V): keep the masked positions
            masked = labels != IGNORE_INDEX
            logits, labels = logits[masked], labels[masked]
        else:  # sparse (M, V), already in row-major order of the masked positions
            labels = labels[labels != IGNORE_INDEX]
        metric.update(logits, labels)
