"""Unpadding: run the encoder on real tokens only, documents kept apart.

A padded batch `(batch, seq)` becomes one `(total_tokens, ...)` tensor plus the cumulative
document lengths `cu_seqlens`, the layout of FlashAttention's varlen kernels. Feed-forward layers
and LayerNorms then never see padding.

The attention mask follows transformers' convention (0 = padding, non-zero = real token) and
extends it for packed rows: within a row, each maximal run of one non-zero value is a document,
so `[1, 1, 1, 2, 2, 0]` holds two documents and one padding token, and padding inside a run
(`[1, 1, 0, 1]`) ends it. A plain 0/1 mask is one document per row. Documents never attend to
each other, and ALiBi distances are counted within a document, so left padding and right
padding give the same result.

On a GPU, finding the real tokens needs `nonzero` and the longest document's length on the host:
each a host-device sync, and under `torch.compile` a graph break. `BatchLayout` does that work
once per batch, on the host before the batch is copied to the device (the training loop does so
for every microbatch), so the model's step runs without a sync.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Labels equal to this are not predicted, as in transformers and torch's cross_entropy.
IGNORE_INDEX = -100


def unpad_input(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """From a `(batch, seq)` mask: real tokens' flat indices, `cu_seqlens`, longest document.

    Returns `(indices, cu_seqlens, max_seqlen)`: `indices` (total,) int64 into the flattened
    `batch * seq` positions; `cu_seqlens` (documents + 1,) int32, starting at 0; `max_seqlen` a
    Python int (the kernels need it on the host).
    """
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must have shape (batch, seq), got {tuple(attention_mask.shape)}"
        )
    seqlen = attention_mask.shape[1]
    flat_mask = attention_mask.reshape(-1)
    indices = torch.nonzero(flat_mask, as_tuple=True)[0]
    total = indices.numel()
    if total == 0:
        raise ValueError("attention_mask marks no real token in the whole batch")
    document_labels = flat_mask[indices]
    rows = torch.div(indices, seqlen, rounding_mode="floor")
    starts_document = torch.ones(total, dtype=torch.bool, device=indices.device)
    starts_document[1:] = (
        (rows[1:] != rows[:-1])  # a new row
        | (document_labels[1:] != document_labels[:-1])  # a new label
        | (indices[1:] != indices[:-1] + 1)  # padding in between: a new run
    )
    starts = torch.nonzero(starts_document, as_tuple=True)[0]
    cu_seqlens = F.pad(starts, (0, 1), value=total).to(torch.int32)
    max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    return indices, cu_seqlens, max_seqlen


def gather_tokens(padded: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """`(batch, seq, ...)` -> `(total, ...)`: keep the real tokens, in row-major order."""
    return padded.reshape(-1, *padded.shape[2:]).index_select(0, indices)


def scatter_tokens(
    tokens: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int
) -> torch.Tensor:
    """`(total, ...)` -> `(batch, seq, ...)`, zeros at padding: the inverse of `gather_tokens`."""
    flat = tokens.new_zeros(batch * seqlen, *tokens.shape[1:])
    return flat.index_copy(0, indices, tokens).reshape(batch, seqlen, *tokens.shape[1:])


def document_layout(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every real token, its document number and its position inside that document."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    document_ids = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=cu_seqlens.device), lengths, output_size=total
    )
    positions = torch.arange(total, device=cu_seqlens.device) - cu_seqlens.long()[document_ids]
    return document_ids, positions


def to_document_batch(
    tokens: torch.Tensor,
    document_ids: torch.Tensor,
    positions: torch.Tensor,
    num_documents: int,
    max_seqlen: int,
) -> torch.Tensor:
    """`(total, ...)` -> `(documents, max_seqlen, ...)`, one zero-padded row per document."""
    padded = tokens.new_zeros(num_documents, max_seqlen, *tokens.shape[1:])
    return padded.index_put((document_ids, positions), tokens)


def from_document_batch(
    padded: torch.Tensor, document_ids: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """`(documents, max_seqlen, ...)` -> `(total, ...)`: the inverse of `to_document_batch`."""
    return padded[document_ids, positions]


@dataclass(frozen=True)
class BatchLayout:
    """Where a padded batch's real tokens and predicted tokens are, worked out once per batch.

    `indices`, `cu_seqlens` and `max_seqlen` are `unpad_input`'s; `masked` (M,) int64 numbers
    the real tokens whose label is predicted (label != -100), as positions among the T real
    tokens in row-major order, or is None when the batch has no labels.
    """

    indices: torch.Tensor  # (T,) int64
    cu_seqlens: torch.Tensor  # (documents + 1,) int32
    max_seqlen: int
    masked: torch.Tensor | None = None  # (M,) int64

    @classmethod
    def of(cls, attention_mask: torch.Tensor, labels: torch.Tensor | None = None) -> "BatchLayout":
        indices, cu_seqlens, max_seqlen = unpad_input(attention_mask)
        masked = None
        if labels is not None:
            token_labels = gather_tokens(labels, indices)
            masked = torch.nonzero(token_labels != IGNORE_INDEX, as_tuple=True)[0]
        return cls(indices, cu_seqlens, max_seqlen, masked)

    @property
    def total_tokens(self) -> int:
        return self.indices.shape[0]

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def pin_memory(self) -> "BatchLayout":
        """In page-locked host memory, from which `to(cuda, non_blocking=True)` is asynchronous."""
        masked = None if self.masked is None else self.masked.pin_memory()
        return BatchLayout(
            self.indices.pin_memory(), self.cu_seqlens.pin_memory(), self.max_seqlen, masked
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "BatchLayout":
        """On `device`; plain expressions, so that torch.compile can trace it without a break."""
        masked = self.masked
        if masked is not None:
            masked = masked.to(device, non_blocking=non_blocking)
        return BatchLayout(
            self.indices.to(device, non_blocking=non_blocking),
            self.cu_seqlens.to(device, non_blocking=non_blocking),
            self.max_seqlen,
            masked,
        )
