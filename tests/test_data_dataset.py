import json

import numpy as np
import pytest
import torch

from mosaic_pretrain.data.collator import MLMCollator
from mosaic_pretrain.data.convert import ConvertOptions, convert
from mosaic_pretrain.data.dataset import MLMStreamingDataset, build_mlm_dataloader
from mosaic_pretrain.errors import DataError
from tests.data_helpers import corpus_texts, write_jsonl

QUIET = dict(progress=False, log=lambda line: None)
TEXTS = corpus_texts(60)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The same 60 documents as text shards and as pre-tokenized shards."""
    root = tmp_path_factory.mktemp("mds")
    write_jsonl(root / "src" / "docs.jsonl", TEXTS)
    for output_format in ("text", "tokens"):
        convert(
            ConvertOptions(
                sources=(str(root / "src"),), output_format=output_format, shard_size_bytes=1 << 16
            ),
            root / output_format,
            **QUIET,
        )
    return root


def dataset(path, tokenizer, max_seq_len=64, **kwargs) -> MLMStreamingDataset:
    return MLMStreamingDataset(
        local=str(path), split="train", tokenizer=tokenizer, max_seq_len=max_seq_len, **kwargs
    )


def test_text_and_pretokenized_shards_give_the_same_samples(converted, bert_tokenizer):
    text = dataset(converted / "text", bert_tokenizer)
    tokens = dataset(converted / "tokens", bert_tokenizer)
    assert len(text) == len(tokens) == 60
    for index in range(60):
        expected = bert_tokenizer(TEXTS[index], truncation=True, max_length=64)["input_ids"]
        assert text[index].input_ids.tolist() == expected
        assert np.array_equal(tokens[index].input_ids, text[index].input_ids)
        assert text[index].index == index


def test_short_documents_are_not_padded_and_long_ones_truncated(converted, bert_tokenizer):
    data = dataset(converted / "text", bert_tokenizer, max_seq_len=700)  # documents: 638-810
    samples = [data[i] for i in range(60)]
    lengths = [len(s.input_ids) for s in samples]
    assert max(lengths) == 700 and min(lengths) == 638
    assert all(s.input_ids[0] == 101 and s.input_ids[-1] == 102 for s in samples)


def collect(loader, batches=None):
    """The loader's batches, stopping right after the `batches`-th (no batch fetched beyond)."""
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == batches:
            break
    return out


@pytest.mark.parametrize("packing", [False, True])
def test_resumed_loader_continues_with_the_same_batches(
    tmp_path, converted, bert_tokenizer, packing
):
    """Take 3 batches, save the loader state, rebuild everything, load it: the remaining batches
    equal those of an uninterrupted epoch (order and masking)."""

    def loader():
        data = dataset(
            converted / "tokens", bert_tokenizer, shuffle=True, shuffle_seed=5, batch_size=8
        )
        collator = MLMCollator(bert_tokenizer, 0.3, 64, seed=11, packing=packing)
        return build_mlm_dataloader(data, collator, batch_size=8)

    first = loader()
    uninterrupted = collect(first)
    del first
    interrupted = loader()
    head = collect(interrupted, batches=3)
    state = interrupted.state_dict()
    del interrupted
    resumed = loader()
    resumed.load_state_dict(state)
    tail = collect(resumed)
    assert len(uninterrupted) == 7  # 60 samples, batch 8, drop_last
    for got, expected in zip(head + tail, uninterrupted, strict=True):
        for key in expected:
            assert torch.equal(got[key], expected[key]), key
    order = torch.cat([b["sample_index"] for b in uninterrupted]).tolist()
    assert order != sorted(order)  # shuffled


def test_max_seq_len_must_leave_room_for_text(converted, bert_tokenizer):
    with pytest.raises(DataError, match="max_seq_len=2 leaves no room for text"):
        dataset(converted / "text", bert_tokenizer, max_seq_len=2)


def test_missing_data_is_a_clear_error(tmp_path, bert_tokenizer):
    with pytest.raises(DataError, match=r"no MDS index at .*mosaic-pretrain convert"):
        dataset(tmp_path / "nothing", bert_tokenizer)


def copy_of(converted, tmp_path, name="tokens"):
    import shutil

    target = tmp_path / name
    shutil.copytree(converted / name, target)
    return target


def test_corrupt_index_is_a_clear_error(tmp_path, converted, bert_tokenizer):
    data = copy_of(converted, tmp_path)
    (data / "train" / "index.json").write_text("{ not json")
    with pytest.raises(DataError, match=r"index.json is corrupt .* convert the data again"):
        dataset(data, bert_tokenizer)


def test_truncated_shard_is_a_clear_error(tmp_path, converted, bert_tokenizer):
    data = copy_of(converted, tmp_path)
    for shard in (data / "train").glob("shard.00000.*"):  # compressed and decompressed copies
        shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DataError, match=r"shard\.00000.* is truncated or corrupt"):
        dataset(data, bert_tokenizer)


def test_missing_shard_is_a_clear_error(tmp_path, converted, bert_tokenizer):
    data = copy_of(converted, tmp_path)
    for shard in (data / "train").glob("shard.00001.*"):
        shard.unlink()
    with pytest.raises(DataError, match=r"is missing; convert the data again"):
        dataset(data, bert_tokenizer)


def test_pretokenized_data_refuses_another_tokenizer(tmp_path, converted, bert_tokenizer):
    data = copy_of(converted, tmp_path)
    manifest = json.loads((data / "conversion.json").read_text())
    manifest["tokenizer"]["fingerprint"] = "0000"
    (data / "conversion.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="was pre-tokenized with tokenizer 'bert-base-uncased'"):
        dataset(data, bert_tokenizer)


def test_remote_shards_are_fetched_into_the_local_cache(tmp_path, converted, bert_tokenizer):
    """The `remote` path (s3://, gs://, ... in real use; a folder here) with a local cache."""
    cache = tmp_path / "cache"
    data = MLMStreamingDataset(
        remote=str(converted / "text"),
        local=str(cache),
        split="train",
        tokenizer=bert_tokenizer,
        max_seq_len=64,
    )
    local = dataset(converted / "text", bert_tokenizer)
    assert np.array_equal(data[59].input_ids, local[59].input_ids)
    assert (cache / "train" / "index.json").exists()
