"""Mixtures of MDS datasets (`train_loader.dataset.streams`): which stream each sample came
from, the counts a run logs, checks per stream, and resume equivalence with streams."""

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streaming import Stream

from mosaic_pretrain.callbacks.metrics_file import METRICS_FILE, read_metrics
from mosaic_pretrain.commands.check import check_recipe
from mosaic_pretrain.commands.train import train
from mosaic_pretrain.config import load_config
from mosaic_pretrain.data.convert import ConvertOptions, convert
from mosaic_pretrain.data.dataset import MLMStreamingDataset
from mosaic_pretrain.errors import ConfigError

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"
QUICK = [
    "model.model_config.num_hidden_layers=1",
    "global_train_batch_size=8",
    "device_train_microbatch_size=8",
    "log_to_console=false",
    "autoresume=false",  # a new run each time (the smoke recipe continues its own)
    "eval_loader=null",
    "export_folder=null",
    "train_loader.dataset.local=null",
    "train_loader.dataset.convert_builtin_corpus=false",
]
MARK = "estoppel"  # every document of the second source holds it, no shipped one does


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two converted sources: the shipped corpus, and 300 short legal-flavoured documents."""
    root = tmp_path_factory.mktemp("streams")
    quiet = dict(progress=False, log=lambda line: None)
    convert(ConvertOptions(val_fraction=0.05), root / "books", **quiet)
    legal = root / "legal.jsonl"
    legal.write_text(
        "".join(
            json.dumps({"text": f"Case {n}: the doctrine of {MARK} bars the claim of party {n}."})
            + "\n"
            for n in range(300)
        )
    )
    convert(ConvertOptions(sources=(str(legal),), val_fraction=0.1), root / "legal", **quiet)
    return root


def mixture(sources, books: str = "proportion: 0.75", legal: str = "proportion: 0.25") -> str:
    return (
        f"train_loader.dataset.streams={{books: {{local: {sources / 'books'}, {books}}}, "
        f"legal: {{local: {sources / 'legal'}, {legal}}}}}"
    )


def test_each_sample_knows_its_stream(sources, bert_tokenizer):
    streams = [
        Stream(local=str(sources / "books"), split="val"),
        Stream(local=str(sources / "legal"), split="val"),
    ]
    dataset = MLMStreamingDataset(
        streams=streams, tokenizer=bert_tokenizer, max_seq_len=64, batch_size=8
    )
    try:
        ids = np.arange(len(dataset))
        stream = dataset.stream_of(ids)
        mark = bert_tokenizer(MARK, add_special_tokens=False)["input_ids"]
        for sample_id in ids:
            tokens = dataset[int(sample_id)].input_ids.tolist()
            has_mark = any(tokens[i : i + len(mark)] == mark for i in range(len(tokens)))
            assert has_mark == (stream[sample_id] == 1), sample_id
        legal_val = json.loads((sources / "legal" / "conversion.json").read_text())
        assert np.bincount(stream, minlength=2)[1] == legal_val["splits"]["val"]["documents"]
    finally:
        dataset.release_shared_memory()


def run(sources, tmp_path, *overrides):
    config = load_config(SMOKE, [*QUICK, f"save_folder={tmp_path}/checkpoints", *overrides])
    trainer = train(config)
    weights = {k: v.detach().clone() for k, v in trainer.state.model.state_dict().items()}
    trainer.close()
    del trainer
    gc.collect()
    return weights, read_metrics(tmp_path / "checkpoints" / METRICS_FILE)


def streams_in_batches(config, batches: int, tokenizer) -> list[int]:
    """[books, legal] samples in the first `batches` batches of the recipe's loader, told apart
    by their text (only legal documents hold MARK), not by the dataset's shard tables."""
    from mosaic_pretrain.train.builders import build_dataloader

    spec = build_dataloader(config.train_loader, config, tokenizer, 8)
    mark = tokenizer(MARK, add_special_tokens=False)["input_ids"]
    counts = [0, 0]
    try:
        for number, batch in enumerate(spec.dataloader):
            if number == batches:
                break
            original = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
            for row in original.tolist():
                legal = any(row[i : i + len(mark)] == mark for i in range(len(row)))
                counts[legal] += 1
    finally:
        spec.dataloader.dataset.release_shared_memory()
    return counts


def test_a_mixed_run_logs_each_streams_samples(sources, tmp_path, bert_tokenizer):
    config_overrides = [mixture(sources), "max_duration=4ba"]
    _, series = run(sources, tmp_path, *config_overrides)
    books = series["data/stream/books/samples"]
    legal = series["data/stream/legal/samples"]
    last = max(books)
    config = load_config(SMOKE, [*QUICK, f"save_folder={tmp_path}/other", *config_overrides])
    assert [books[last], legal[last]] == streams_in_batches(config, 4, bert_tokenizer)
    assert books[last] + legal[last] == 32 and legal[last] > 0
    assert series["data/stream/legal/share"][last] == pytest.approx(legal[last] / 32)


def test_resuming_a_mixture_mid_epoch_is_bit_identical(sources, tmp_path):
    """With whole-word masking too: its masks come from the seed and the sample indices."""
    common = [
        "mlm_whole_word=true",
        mixture(sources),
        "max_duration=4ba",
        "save_interval=2ba",
        "save_num_checkpoints_to_keep=-1",
    ]
    full, full_series = run(sources, tmp_path / "full", *common)
    checkpoint = tmp_path / "full" / "checkpoints" / "ep0-ba2-rank0.pt"
    resumed, resumed_series = run(sources, tmp_path / "resumed", *common, f"load_path={checkpoint}")
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    for stream in ("books", "legal"):  # counted on from the checkpoint
        key = f"data/stream/{stream}/samples"
        assert (
            resumed_series[key][max(resumed_series[key])] == full_series[key][max(full_series[key])]
        )


def test_check_looks_at_every_stream(sources, tmp_path):
    broken = mixture(sources).replace(str(sources / "legal"), str(tmp_path / "missing"))
    config = load_config(SMOKE, [*QUICK, broken, f"save_folder={tmp_path}/ckpt"])
    problems = check_recipe(config)
    assert any(f"no MDS index at {tmp_path / 'missing'}/train/index.json" in p for p in problems)
    assert len(problems) == 1  # the books stream is fine


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train_loader.dataset.streams=null"], "train_loader.dataset.local: set an MDS folder"),
        (["train_loader.dataset.local=/data"], "set local/remote or streams, not both"),
    ],
)
def test_bad_mixtures(sources, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SMOKE, [*QUICK, mixture(sources), *overrides])


def test_an_empty_mixture():
    with pytest.raises(ConfigError, match="streams is empty; name at least one stream"):
        load_config(SMOKE, [*QUICK, "train_loader.dataset.streams={}"])


def test_a_stream_with_two_weights(sources):
    with pytest.raises(
        ConfigError, match=r"streams.legal: set one of proportion, repeat and choose"
    ):
        load_config(SMOKE, [*QUICK, mixture(sources, legal="proportion: 0.2, choose: 10")])


def test_proportions_are_for_every_stream_or_none(sources):
    with pytest.raises(ConfigError, match=r"every stream needs one or none does \(books set it"):
        load_config(SMOKE, [*QUICK, mixture(sources, legal="repeat: 2")])


def test_a_stream_may_move_when_a_run_resumes(sources, tmp_path):
    from mosaic_pretrain.train.resume import check_resume, recipe_record

    started = load_config(SMOKE, [*QUICK, mixture(sources)])
    record = {"recipe": recipe_record(started), "code_version": "test"}
    moved = load_config(SMOKE, [*QUICK, mixture(sources).replace(str(sources), "/elsewhere")])
    check_resume(moved, tmp_path / "ep0-ba2-rank0.pt", record)  # no error
    reweighted = load_config(SMOKE, [*QUICK, mixture(sources, legal="proportion: 0.5")])
    with pytest.raises(ConfigError, match=r"streams\.legal\.proportion"):
        check_resume(reweighted, tmp_path / "ep0-ba2-rank0.pt", record)
