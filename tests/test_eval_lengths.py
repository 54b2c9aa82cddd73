"""`eval-lengths`: MLM loss per sequence length, for MosaicBERT (every length) and BERT (up to its
position table), from checkpoints, save folders and Hugging Face directories alike."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from mosaic_pretrain.cli import main
from mosaic_pretrain.commands.train import train
from mosaic_pretrain.config import load_config
from mosaic_pretrain.data.convert import ConvertOptions, convert
from mosaic_pretrain.data.tokenizer import load_tokenizer
from mosaic_pretrain.errors import CheckpointError, ConfigError, DataError
from mosaic_pretrain.lengths.command import EvalOptions, eval_lengths
from mosaic_pretrain.lengths.models import labels_for
from mosaic_pretrain.lengths.report import REPORT_CSV, REPORT_JSON, REPORT_PNG
from mosaic_pretrain.lengths.rows import form_rows, parse_lengths
from mosaic_pretrain.model.padding import IGNORE_INDEX
from tests.data_helpers import corpus_texts, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "pretrain" / "smoke.yaml"
LENGTHS = (32, 64, 128)
TINY_RUN = [
    "max_seq_len=32",
    "model.model_config.hidden_size=64",
    "model.model_config.num_attention_heads=2",
    "model.model_config.intermediate_size=128",
    "model.model_config.num_hidden_layers=1",
    "global_train_batch_size=8",
    "device_train_microbatch_size=8",
    "device_eval_batch_size=8",
    "eval_subset_num_batches=1",
    "max_duration=2ba",
    "eval_interval=2ba",
    "save_interval=2ba",
    "log_to_console=false",
    "autoresume=false",
]


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    """Twelve documents of the shipped corpus, each far longer than 128 tokens."""
    return write_jsonl(tmp_path_factory.mktemp("texts") / "docs.jsonl", corpus_texts(12))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, texts) -> Path:
    """A MosaicBERT trained for two batches at 32 tokens by `train`: its save folder holds a
    checkpoint and the recipe, and its export_folder the Hugging Face directory."""
    root = tmp_path_factory.mktemp("run")
    corpus = write_jsonl(root / "corpus.jsonl", corpus_texts(60, max_chars=600))
    convert(
        ConvertOptions(sources=(str(corpus),), val_fraction=0.2),
        root / "data",
        progress=False,
        log=lambda line: None,
    )
    paths = [f"data_local={root}/data", f"save_folder={root}/run", f"export_folder={root}/hf"]
    train(load_config(SMOKE, [*TINY_RUN, *paths])).close()
    return root


def options(tmp_path: Path, models, data, **overrides) -> EvalOptions:
    settings = dict(
        models=tuple(str(model) for model in models),
        lengths=LENGTHS,
        data=(str(data),),
        out=tmp_path / "report",
        device="cpu",
    )
    return EvalOptions(**{**settings, **overrides})


def tiny_bert(folder: Path, max_positions: int = 64) -> Path:
    """A small transformers BERT with a 64-position table, saved with its tokenizer."""
    tokenizer = load_tokenizer("bert-base-uncased")
    config = BertConfig(
        vocab_size=30528, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=max_positions,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def numbers(report: dict) -> list:
    return [
        (model["label"], entry["length"], entry.get("loss"), entry.get("rows"))
        for model in report["models"]
        for entry in model["results"]
    ]


def test_mosaic_bert_trained_at_32_tokens_is_scored_at_every_length(tiny_run, texts, tmp_path):
    report, table, files = eval_lengths(options(tmp_path, [tiny_run / "hf"], texts))
    (model,) = report["models"]
    assert model["model_type"] == "mosaic_bert" and model["position_limit"] is None
    assert [entry["length"] for entry in model["results"]] == list(LENGTHS)
    for entry in model["results"]:
        assert not entry["skipped"] and 0 < entry["loss"] < 20
        assert entry["rows"] == 12 and entry["masked_tokens"] > 0
        assert 0 <= entry["accuracy"] <= 1
    masked = [entry["masked_tokens"] for entry in model["results"]]
    assert masked == sorted(masked)  # longer rows: more masked tokens, the same documents
    assert [path.name for path in files] == [REPORT_JSON, REPORT_CSV, REPORT_PNG]
    assert json.loads(files[0].read_text()) == report
    assert "hf" in table and "skipped" not in table


def test_bert_stops_at_its_position_table_with_a_note(texts, tmp_path):
    bert = tiny_bert(tmp_path / "bert")
    report, table, files = eval_lengths(options(tmp_path, [bert], texts))
    (model,) = report["models"]
    assert model["position_limit"] == 64
    run, beyond = model["results"][:2], model["results"][2]
    assert all(not entry["skipped"] and entry["loss"] > 0 for entry in run)
    assert beyond == {
        "length": 128,
        "skipped": True,
        "reason": "beyond its 64-position table (max_position_embeddings=64)",
    }
    assert "bert: not run at 128: beyond its 64-position table" in table
    csv_lines = files[1].read_text().splitlines()
    assert csv_lines[-1].startswith("bert,128,skipped,,,,,beyond its 64-position table")


def test_checkpoint_save_folder_and_export_give_the_same_numbers(tiny_run, texts, tmp_path):
    checkpoint = tiny_run / "run" / "ep0-ba2-rank0.pt"
    models = [checkpoint, tiny_run / "run", tiny_run / "hf"]
    report, _, _ = eval_lengths(options(tmp_path, models, texts))
    kinds = [model["kind"] for model in report["models"]]
    assert kinds == ["checkpoint", "save folder", "hf directory"]
    assert [model["label"] for model in report["models"]] == ["ep0-ba2-rank0", "run", "hf"]
    results = [model["results"] for model in report["models"]]
    assert results[0] == results[1] == results[2]


def test_two_runs_give_identical_numbers_and_the_seed_changes_them(texts, tmp_path):
    bert = tiny_bert(tmp_path / "bert")
    first, _, _ = eval_lengths(options(tmp_path / "a", [bert], texts))
    second, _, _ = eval_lengths(options(tmp_path / "b", [bert], texts))
    assert numbers(first) == numbers(second)
    other, _, _ = eval_lengths(options(tmp_path / "c", [bert], texts, seed=18))
    assert numbers(other) != numbers(first)


def test_the_masks_of_a_shared_prefix_agree_at_every_length(bert_tokenizer):
    contents = [list(range(1000, 1300)), list(range(2000, 2300))]
    rows = form_rows(contents, [32, 64, 256], bert_tokenizer, seed=17, longest=256)
    for short, long in itertools.pairwise(rows):
        shared = short.length - 1  # all but the short row's [SEP]
        assert torch.equal(short.input_ids[:, :shared], long.input_ids[:, :shared])
        assert torch.equal(short.labels[:, :shared], long.labels[:, :shared])
    assert (rows[0].input_ids[:, 0] == bert_tokenizer.cls_token_id).all()
    assert (rows[0].input_ids[:, -1] == bert_tokenizer.sep_token_id).all()
    longest = rows[-1].labels
    share = float((longest != IGNORE_INDEX).float().mean())
    assert 0.10 < share < 0.20  # 15% of the tokens


def test_mosaic_bert_loss_is_the_models_own_mlm_loss(tiny_run, texts):
    """Our summed cross-entropy over masked tokens equals the model's own loss at one batch."""
    from mosaic_pretrain.lengths.evaluate import score_rows
    from mosaic_pretrain.lengths.models import load_model

    loaded = load_model(str(tiny_run / "hf"), "hf")
    contents = [list(range(1000, 1126))] * 4
    (rows,) = form_rows(contents, [128], loaded.tokenizer, seed=17, longest=128)
    score = score_rows(loaded.model, rows, batch_size=8, device=torch.device("cpu"))
    with torch.no_grad():
        own = loaded.model(input_ids=rows.input_ids, labels=rows.labels).loss
    assert score.loss == pytest.approx(float(own), rel=1e-5)


def test_a_path_that_is_no_model_is_refused(texts, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    cases = {
        tmp_path / "missing": "does not exist",
        tmp_path / "empty": "is a folder without config.json or a checkpoint",
        tmp_path / "notes.txt": "is a file but not a checkpoint",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            eval_lengths(options(tmp_path, [path], texts))
    with pytest.raises(DataError, match=r"--data .*nowhere does not exist; give an MDS split"):
        eval_lengths(options(tmp_path, [tmp_path / "empty"], tmp_path / "nowhere"))


def test_bad_lengths_name_the_flag():
    assert parse_lengths("128,256") == [128, 256]
    for text, message in {
        "": "must be positive whole numbers",
        "128,abc": "must be positive whole numbers",
        "0,128": "must be positive whole numbers",
        "256,128": "must increase without repeats, e.g. --lengths 128,256",
        "128,128": "must increase without repeats",
    }.items():
        with pytest.raises(ConfigError, match=f"--lengths {text!r} {message}"):
            parse_lengths(text)


def test_too_few_long_documents_say_how_many_and_what_to_do(tmp_path):
    bert = tiny_bert(tmp_path / "bert", max_positions=512)
    short = write_jsonl(tmp_path / "short.jsonl", [text[:300] for text in corpus_texts(10)])
    with pytest.raises(DataError) as raised:
        eval_lengths(options(tmp_path, [bert], short, lengths=(32, 512)))
    message = str(raised.value)
    assert "only 0 of the 10 documents of 1 file(s)" in message
    assert "have the 510 tokens a row of 512 needs (the longest read has " in message
    assert "fewer than --min-documents 8; use --lengths up to " in message
    assert ", other --data, or a lower --min-documents" in message
    assert "\n" not in message


def test_labels_are_path_names_made_unique():
    assert labels_for(["a/run", "b/run", "x/ep0-ba2-rank0.pt"]) == [
        "a/run",
        "b/run",
        "ep0-ba2-rank0",
    ]
    assert labels_for(["a/run", "a/run"]) == ["run", "run#2"]
    with pytest.raises(ConfigError, match="--label is given 1 times for 2 models"):
        labels_for(["a", "b"], ["one"])


def test_the_command_line_writes_the_report_and_prints_the_table(texts, tmp_path, capsys):
    bert = tiny_bert(tmp_path / "bert")
    out = tmp_path / "out"
    argv = ["eval-lengths", str(bert), "--lengths", "32,64,128", "--data", str(texts)]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "MLM loss by row length" in printed and "skipped" in printed
    assert f"report: {out / REPORT_JSON}, {REPORT_CSV}, {REPORT_PNG}" in printed
    assert sorted(path.name for path in out.iterdir()) == [REPORT_CSV, REPORT_JSON, REPORT_PNG]
    assert (out / REPORT_PNG).stat().st_size > 5_000
    done = subprocess.run(
        [sys.executable, "-m", "mosaic_pretrain", *argv[:3], "64,32", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "mosaic-pretrain eval-lengths: error: --lengths '64,32' must increase without repeats, "
        "e.g. --lengths 32,64"
    )


def test_mds_splits_of_both_formats_give_the_numbers_of_their_text_files(texts, tmp_path):
    bert = tiny_bert(tmp_path / "bert")
    quiet = dict(progress=False, log=lambda line: None)
    from_files, _, _ = eval_lengths(options(tmp_path / "files", [bert], texts))
    for output_format in ("text", "tokens"):
        folder = tmp_path / output_format
        convert(ConvertOptions(sources=(str(texts),), output_format=output_format), folder, **quiet)
        from_split, _, _ = eval_lengths(options(tmp_path / "r", [bert], folder / "train"))
        assert numbers(from_split) == numbers(from_files), output_format
        assert from_split["data"] == f"MDS split {folder / 'train'}"


def test_the_default_documents_are_those_convert_routes_to_val(tmp_path):
    """split_documents, which reads the shipped corpus's val documents, follows convert."""
    from streaming.base.format import reader_from_json

    from mosaic_pretrain.data.convert import split_documents

    source = write_jsonl(tmp_path / "docs.jsonl", corpus_texts(40, max_chars=200))
    convert_options = ConvertOptions(sources=(str(source),), val_fraction=0.2, compression="none")
    convert(convert_options, tmp_path / "out", progress=False, log=lambda line: None)
    index = json.loads((tmp_path / "out" / "val" / "index.json").read_text())
    written = [
        sample["text"]
        for shard in index["shards"]
        for sample in reader_from_json(str(tmp_path / "out"), "val", shard)
    ]
    assert 0 < len(written) < 40
    assert list(split_documents(convert_options, "val")) == written
