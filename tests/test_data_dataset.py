import gc
import json
import multiprocessing
import os

import numpy as np
import pytest
import torch

from mosaic_pretrain.data.collator import MLMCollator
from mosaic_pretrain.data.convert import ConvertOptions, convert
from mosaic_pretrain.data.dataset import MLMStreamingDataset, build_mlm_dataloader
from mosaic_pretrain.errors import DataError
from tests.data_helpers import corpus_texts, shared_memory_of, write_jsonl

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


def interrupted_and_uninterrupted(make_loader, stop_after: int):
    """(batches of one whole epoch, the same epoch stopped after `stop_after` batches, its state
    saved, then continued by a freshly built loader from that state)."""
    first = make_loader()
    uninterrupted = collect(first)
    del first
    interrupted = make_loader()
    head = collect(interrupted, batches=stop_after)
    state = interrupted.state_dict()
    del interrupted
    resumed = make_loader()
    resumed.load_state_dict(state)
    return uninterrupted, head + collect(resumed)


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

    uninterrupted, resumed = interrupted_and_uninterrupted(loader, stop_after=3)
    assert len(uninterrupted) == 7  # 60 samples, batch 8, drop_last
    for got, expected in zip(resumed, uninterrupted, strict=True):
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
    index_path = data / "train" / "index.json"
    index = json.loads(index_path.read_text())
    index["mosaic_pretrain"]["tokenizer"]["fingerprint"] = "0000"
    index_path.write_text(json.dumps(index))
    with pytest.raises(DataError, match="was pre-tokenized with another tokenizer"):
        dataset(data, bert_tokenizer)
    with pytest.raises(DataError, match="was pre-tokenized with another tokenizer"):
        MLMStreamingDataset(local=str(data / "train"), tokenizer=bert_tokenizer, max_seq_len=64)
    with pytest.raises(DataError, match="was pre-tokenized with another tokenizer"):
        MLMStreamingDataset(
            remote=str(data),
            local=str(tmp_path / "cache"),
            split="train",
            tokenizer=bert_tokenizer,
            max_seq_len=64,
        )


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


AWKWARD_TEXTS = [
    "\n".join(["disregard", "unbelievably", "word"] * 200),  # no spaces at all
    "\t".join(["tabbed", "separated", "entries"] * 200),
    "东京都は日本の首都です。" * 150,  # no whitespace: never cut
    "a" * 5000 + " tail",  # one enormous word
    "short text",  # shorter than the budget
    ("Supercalifragilistic " * 300).strip(),
]


@pytest.mark.parametrize("max_seq_len", [3, 8, 64])
def test_text_path_equals_full_tokenization_on_awkward_text(tmp_path, bert_tokenizer, max_seq_len):
    write_jsonl(tmp_path / "src" / "awkward.jsonl", AWKWARD_TEXTS)
    convert(ConvertOptions(sources=(str(tmp_path / "src"),)), tmp_path / "out", **QUIET)
    data = dataset(tmp_path / "out", bert_tokenizer, max_seq_len=max_seq_len)
    for index, text in enumerate(AWKWARD_TEXTS):
        expected = bert_tokenizer(text, truncation=True, max_length=max_seq_len)["input_ids"]
        assert data[index].input_ids.tolist() == expected, index


def test_special_tokens_come_from_the_tokenizer_output(tmp_path, bert_tokenizer):
    """A bare PreTrainedTokenizerFast adds [CLS]/[SEP] in its post-processor only."""
    from transformers import PreTrainedTokenizerFast

    bert_tokenizer.save_pretrained(tmp_path / "tok")
    bare = PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "tok" / "tokenizer.json"),
        pad_token="[PAD]",
        mask_token="[MASK]",
    )
    assert bare.build_inputs_with_special_tokens([5, 6]) == [5, 6]  # the trap
    write_jsonl(tmp_path / "src" / "d.jsonl", ["hello world"])
    convert(ConvertOptions(sources=(str(tmp_path / "src"),)), tmp_path / "out", **QUIET)
    sample = dataset(tmp_path / "out", bare, max_seq_len=16)[0]
    assert sample.input_ids.tolist() == bare("hello world")["input_ids"] == [101, 7592, 2088, 102]


def test_loader_and_dataset_batch_sizes_must_agree(converted, bert_tokenizer):
    from mosaic_pretrain.errors import ConfigError

    data = dataset(converted / "tokens", bert_tokenizer, batch_size=4)
    with pytest.raises(ConfigError, match="batch_size=4 but the loader uses 8"):
        build_mlm_dataloader(data, MLMCollator(bert_tokenizer, 0.3, 64), batch_size=8)


def test_resume_with_dataloader_workers(converted, bert_tokenizer):
    def loader():
        data = dataset(
            converted / "tokens", bert_tokenizer, shuffle=True, shuffle_seed=5, batch_size=4
        )
        return build_mlm_dataloader(
            data, MLMCollator(bert_tokenizer, 0.3, 64, seed=1), batch_size=4, num_workers=2
        )

    uninterrupted, resumed = interrupted_and_uninterrupted(loader, stop_after=5)
    assert len(resumed) == len(uninterrupted) == 15
    for got, expected in zip(resumed, uninterrupted, strict=True):
        assert torch.equal(got["sample_index"], expected["sample_index"])
        assert torch.equal(got["input_ids"], expected["input_ids"])


def test_a_released_dataset_frees_its_shared_memory(converted, bert_tokenizer):
    """Streaming frees a dataset's shared memory only at interpreter exit; every dataset of a
    long process (an ablation, a test session) kept its descriptors until the open-file limit
    was hit. Released, nothing of it stays named or open, the resume state's segment included."""
    state = None
    for resumed in (False, True):
        data = dataset(converted / "tokens", bert_tokenizer, shuffle=True, batch_size=8)
        loader = build_mlm_dataloader(data, MLMCollator(bert_tokenizer, 0.3, 64), batch_size=8)
        if resumed:
            loader.load_state_dict(state)
        collect(loader, batches=2)
        state = loader.state_dict()
        before = shared_memory_of(data)
        assert len(before["named"]) >= 6 and before["held"]
        data.release_shared_memory()
        assert shared_memory_of(data) == {"named": [], "held": []}


def _release_in_child(data) -> None:
    data.release_shared_memory()


def test_only_the_process_that_built_a_dataset_releases_it(converted, bert_tokenizer):
    """A dataloader worker holds a copy of the dataset: its release must not unlink the segments
    the main process still uses."""
    data = dataset(converted / "tokens", bert_tokenizer, batch_size=8)
    child = multiprocessing.get_context("fork").Process(target=_release_in_child, args=(data,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert len(shared_memory_of(data)["named"]) >= 6
    loader = build_mlm_dataloader(data, MLMCollator(bert_tokenizer, 0.3, 64), batch_size=8)
    assert len(collect(loader)) == 7
    data.release_shared_memory()


def test_a_second_release_leaves_a_newer_dataset_alone(converted, bert_tokenizer):
    """Released segment names are free for the next dataset; a repeated release (the explicit
    one, then the dropped dataset's own) must not unlink the newcomer's."""
    first = dataset(converted / "tokens", bert_tokenizer, batch_size=8)
    first.release_shared_memory()
    second = dataset(converted / "tokens", bert_tokenizer, batch_size=8)
    expected = shared_memory_of(second)
    first.release_shared_memory()
    del first
    assert shared_memory_of(second) == expected
    loader = build_mlm_dataloader(second, MLMCollator(bert_tokenizer, 0.3, 64), batch_size=8)
    assert len(collect(loader)) == 7
    second.release_shared_memory()


def test_a_dropped_dataset_frees_its_shared_memory(converted, bert_tokenizer):
    data = dataset(converted / "tokens", bert_tokenizer, batch_size=8)
    named = shared_memory_of(data)["named"]
    assert len(named) >= 6
    del data
    gc.collect()
    assert not set(named) & set(os.listdir("/dev/shm"))
