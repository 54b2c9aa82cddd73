"""Splitting a host batch into microbatches: rows, their own samples, their own layout."""

from pathlib import Path

import pytest
import torch

from mosaic_pretrain.data.collator import MLMCollator
from mosaic_pretrain.model.padding import BatchLayout
from mosaic_pretrain.train.microbatches import (
    LAYOUT,
    layout_to_device,
    split_into_microbatches,
    with_layout,
)
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


def test_the_loader_pins_its_batches_only_for_a_gpu(tmp_path, monkeypatch):
    from mosaic_pretrain.config import load_config
    from mosaic_pretrain.data.convert import ConvertOptions, convert
    from mosaic_pretrain.train.builders import build_dataloader, build_tokenizer

    data = tmp_path / "data"
    convert(ConvertOptions(max_documents=20), data, progress=False, log=lambda line: None)
    smoke = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"
    config = load_config(smoke, [f"data_local={data}"])
    tokenizer = build_tokenizer(config)
    for gpu in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
        spec = build_dataloader(config.train_loader, config, tokenizer, 4)
        assert spec.dataloader.pin_memory is gpu


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_pinned_batch_gets_a_pinned_layout_and_copies_it_without_waiting(bert_tokenizer):
    batch = MLMCollator(bert_tokenizer, 0.3, 64, seed=0)(random_samples(8, max_len=50))
    pinned = {name: tensor.pin_memory() for name, tensor in batch.items()}
    for microbatch in split_into_microbatches(pinned, 4):
        layout = microbatch[LAYOUT]
        assert layout.indices.is_pinned() and layout.masked.is_pinned()
        torch.cuda.set_sync_debug_mode("error")
        try:
            moved = layout_to_device({**microbatch, "input_ids": microbatch["input_ids"].cuda()})
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert moved[LAYOUT].device.type == "cuda"
