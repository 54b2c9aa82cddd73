"""MLM loss and accuracy of one model on the rows of one length.

The loss is the cross-entropy of the masked tokens in float32, summed over every row and divided
by the masked tokens of all rows (a token-weighted mean, as the eval loaders report it). Only the
masked positions go through the prediction head: MosaicBERT does that itself when given labels
(its logits are then one row per masked token, in row-major order); for BERT the encoder's output
is taken at those positions and given to its head.
"""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.lengths.rows import LengthRows
from mosaic_pretrain.model import MosaicBertForMaskedLM
from mosaic_pretrain.model.padding import IGNORE_INDEX

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Score:
    loss_sum: float
    correct: int
    masked_tokens: int
    rows: int

    @property
    def loss(self) -> float:
        return self.loss_sum / self.masked_tokens

    @property
    def accuracy(self) -> float:
        return self.correct / self.masked_tokens


def pick_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ConfigError(f"--device {name!r} is unknown; choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def precision_of(device: torch.device) -> str:
    """bf16 autocast on a GPU, as the recipes train there; float32 on a CPU."""
    return "bf16 autocast" if device.type == "cuda" else "fp32"


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def masked_logits(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor):
    """(M, V) logits of the masked tokens, row-major, and their (M,) labels."""
    attention_mask = torch.ones_like(input_ids)  # every row is full: no padding at one length
    token_type_ids = torch.zeros_like(input_ids)
    targets = labels[labels != IGNORE_INDEX]
    if isinstance(model, MosaicBertForMaskedLM):
        output = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            labels=labels,
        )
        return output.logits, targets
    hidden = model.base_model(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
    ).last_hidden_state  # (B, S, H)
    return model.cls(hidden[labels != IGNORE_INDEX]), targets


@torch.no_grad()
def score_rows(
    model: torch.nn.Module, rows: LengthRows, batch_size: int, device: torch.device
) -> Score:
    """Sum of the masked tokens' losses, correct predictions and counts over all rows."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(rows.input_ids), batch_size):
        input_ids = rows.input_ids[start : start + batch_size].to(device)
        labels = rows.labels[start : start + batch_size].to(device)
        if not (labels != IGNORE_INDEX).any():
            continue
        with _autocast(device):
            logits, targets = masked_logits(model, input_ids, labels)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(dim=-1) == targets).sum())
    return Score(loss_sum, correct, rows.masked_tokens, len(rows.input_ids))
