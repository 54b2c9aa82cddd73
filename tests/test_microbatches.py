"""Splitting a host batch into microbatches: rows, their own samples, their own layout."""

import pytest
import torch

from mosaic_pretrain.data.collator import MLMCollator
from mosaic_pretrain.model.padding import BatchLayout
from mosaic_pretrain.train.microbatches import LAYOUT, split_into_microbatches, with_layout
from tests.test_data_collator import random_samples


@pytest.mark.parametrize("packing", [False, True])
def test_each_microbatch_gets_its_rows_samples_and_layout(bert_tokenizer, packing):
    samples = random_samples(40, max_len=50, seed=3)
    batch = MLMCollator(bert_tokenizer, 0.3, 64, seed=0, packing=packing)(samples)
    rows = len(batch["input_ids"])
    microbatches = split_into_microbatches(with_layout(batch), 6)
    assert [len(m["input_ids"]) for m in microbatches] == [
        min(6, rows - start) for start in range(0, rows, 6)
    ]
    for name in ("input_ids", "attention_mask", "labels", "sample_index"):
        assert torch.equal(torch.cat([m[name] for m in microbatches]), batch[name])
    length_of = {sample.index: len(sample.input_ids) for sample in samples}
    for microbatch in microbatches:
        layout = microbatch[LAYOUT]
        expected = BatchLayout.of(microbatch["attention_mask"], microbatch["labels"])
        assert torch.equal(layout.indices, expected.indices)
        assert torch.equal(layout.cu_seqlens, expected.cu_seqlens)
        assert torch.equal(layout.masked, expected.masked)
        # The samples counted for this microbatch are the documents in its rows.
        document_lengths = (layout.cu_seqlens[1:] - layout.cu_seqlens[:-1]).tolist()
        assert document_lengths == [length_of[int(i)] for i in microbatch["sample_index"]]


def test_packed_rows_give_microbatches_uneven_sample_counts(bert_tokenizer):
    samples = random_samples(40, max_len=50, seed=3)
    batch = MLMCollator(bert_tokenizer, 0.3, 64, seed=0, packing=True)(samples)
    counts = [len(m["sample_index"]) for m in split_into_microbatches(batch, 4)]
    assert sum(counts) == 40 and len(set(counts)) > 1  # rows hold one, two or more documents


def test_a_batch_not_from_the_collator_is_refused(bert_tokenizer):
    batch = MLMCollator(bert_tokenizer, 0.3, 64, seed=0)(random_samples(4, max_len=50))
    batch["sample_index"] = batch["sample_index"][:3]
    with pytest.raises(ValueError, match="4 documents in its attention mask but 3 sample"):
        split_into_microbatches(batch, 2)
    batch["sample_index"] = torch.arange(4)
    batch["source"] = "c4"
    with pytest.raises(ValueError, match="'source' holds a str, not a tensor"):
        split_into_microbatches(batch, 2)
