"""Splitting a host batch into microbatches, each with its `BatchLayout` worked out on the host.

Composer 0.32 splits the batch the loader gives (still in host memory) and then moves each
microbatch to the device. Splitting here lets two things happen in that window:

- each microbatch's `BatchLayout` (where its real and masked tokens are) is computed on the host,
  so the model's step on the GPU has no `nonzero` and no read of a length: no host-device sync,
  and no graph break under torch.compile;
- with packed rows, each microbatch gets the samples packed into its own rows. Composer's own
  split cuts `sample_index` (one entry per document) at row counts, which with packing gives
  microbatches the wrong sample counts.

Gradient accumulation weighs each microbatch by its masked tokens (`count_tokens`, read by
Composer's `accumulate_train_batch_on_tokens`), not by its samples: the model's loss is a mean
over a microbatch's masked tokens, so only that weighting makes the accumulated gradient the
gradient of the mean loss over every masked token of the batch, on every rank, whatever the
microbatch size and packing.
"""

import torch

from mosaic_pretrain.model.padding import IGNORE_INDEX, BatchLayout

LAYOUT = "layout"  # the batch key of a microbatch's BatchLayout (host tensors)
SAMPLES = "sample_index"  # one entry per document, in row order (see MLMCollator)


def with_layout(batch: dict) -> dict:
    """`batch` plus its BatchLayout, from its (host) attention mask and labels; page-locked
    like the batch when the loader pinned it (for a GPU), so both copy asynchronously."""
    layout = BatchLayout.of(batch["attention_mask"], batch.get("labels"))
    if batch["attention_mask"].is_pinned():
        layout = layout.pin_memory()
    return {**batch, LAYOUT: layout}


def layout_to_device(batch: dict) -> dict:
    """Composer's microbatch transform, run after it moved a microbatch's tensors to the device:
    the layout follows, queued behind the step's work (`non_blocking`). Here rather than in the
    model's forward, so that a compiled forward starts from device tensors."""
    layout = batch.get(LAYOUT)
    device = batch["input_ids"].device
    if layout is None or layout.device == device:
        return batch
    return {**batch, LAYOUT: layout.to(device, non_blocking=True)}


def count_tokens(batch: dict) -> dict[str, int]:
    """Composer's token counts of a batch: `total` real (non-padding) tokens, which the run's
    clock and throughput count, and `loss_generating` masked tokens, the weight of a microbatch
    in gradient accumulation. Read off the host layout when the batch has one (a microbatch on
    the device: counting its tensors there would wait for the device)."""
    layout = batch.get(LAYOUT)
    if layout is not None and layout.masked is not None:
        real, masked = layout.total_tokens, layout.masked.numel()
    else:
        real = int((batch["attention_mask"] != 0).sum())
        masked = int((batch["labels"] != IGNORE_INDEX).sum())
    return {"total": real, "loss_generating": masked or NO_MASKED_TOKENS}


# The weight of a microbatch without a masked token (a low mlm_probability, short rows): its
# loss is 0 and adds no gradient, but Composer divides by the batch's summed weights, which must
# not be 0. Far below one token, so the other microbatches' weights are unchanged in float32.
NO_MASKED_TOKENS = 1e-9


def split_into_microbatches(batch: dict, microbatch_size: int) -> list[dict]:
    """Rows in runs of `microbatch_size`, each run with its samples and its layout."""
    rows = len(batch["input_ids"])
    documents_per_row = batch["attention_mask"].amax(dim=1).clamp_min(1)
    if SAMPLES in batch and int(documents_per_row.sum()) != len(batch[SAMPLES]):
        raise ValueError(
            f"the batch holds {int(documents_per_row.sum())} documents in its attention mask but "
            f"{len(batch[SAMPLES])} sample indices; batches must come from MLMCollator"
        )
    row_starts = list(range(0, rows, microbatch_size))
    sample_starts = torch.cat(
        [documents_per_row.new_zeros(1), documents_per_row.cumsum(0)]
    ).tolist()
    microbatches = []
    for start in row_starts:
        stop = min(start + microbatch_size, rows)
        microbatch = {}
        for key, value in batch.items():
            if key == LAYOUT:
                continue  # a layout of the whole batch: each microbatch gets its own below
            if key == SAMPLES:
                microbatch[key] = value[sample_starts[start] : sample_starts[stop]]
            elif isinstance(value, torch.Tensor):
                microbatch[key] = value[start:stop]
            else:
                raise ValueError(f"batch key {key!r} holds a {type(value).__name__}, not a tensor")
        microbatches.append(with_layout(microbatch))
    return microbatches
