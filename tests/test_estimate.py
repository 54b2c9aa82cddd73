"""`mosaic-pretrain check --estimate`: tokens, FLOPs, time, cost and memory against arithmetic
done by hand here, a fill measured on real data, and one-line errors for bad options."""

import math
from pathlib import Path

import pytest
import torch

from mosaic_pretrain.cli import main
from mosaic_pretrain.config import load_config
from mosaic_pretrain.data.convert import ConvertOptions, convert
from mosaic_pretrain.data.tokenizer import load_tokenizer
from mosaic_pretrain.model import MosaicBertConfig
from mosaic_pretrain.train.estimate import (
    DataFill,
    EstimateOptions,
    StreamSample,
    count_batches,
    estimate,
    estimate_memory,
    format_estimate,
)
from tests.data_helpers import corpus_texts, write_jsonl

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
BASE = CONFIGS / "pretrain" / "mosaic-bert-base.yaml"
SMOKE = CONFIGS / "pretrain" / "smoke.yaml"
A100_BF16 = 312e12  # Composer's GPU_AVAILABLE_FLOPS["a100"]["amp_bf16"]


def base_flops_by_hand(samples: int) -> float:
    """train/flops.py's formula for MosaicBERT-Base on full rows of 128 tokens, 30% masked."""
    hidden, width, layers, vocab, length = 768, 3072, 12, 30528, 128
    per_token_per_layer = 2 * 4 * hidden * hidden + 6 * hidden * width  # projections, GeGLU
    attention_per_layer = 4 * hidden * length * length  # scores and weighted sum, one document
    head = 0.3 * length * (2 * hidden * hidden + 2 * hidden * vocab)  # masked tokens only
    forward = layers * (length * per_token_per_layer + attention_per_layer) + head
    return 3 * forward * samples


def test_the_published_base_recipe_by_hand():
    config = load_config(BASE)
    made = estimate(config, EstimateOptions(gpu="a100", gpus=8, gpu_hour_price=2.5), str(BASE))
    assert made.batches == 70_000  # 286,720,000 samples / 4,096
    assert made.token_positions == 70_000 * 4_096 * 128 == 36_700_160_000
    assert not made.data.measured  # C4 is not converted here: full rows assumed
    assert made.real_tokens == 36_700_160_000
    assert made.masked_tokens == pytest.approx(0.3 * 36_700_160_000)
    assert made.attention_pairs == pytest.approx(70_000 * 4_096 * 128**2)
    flops = base_flops_by_hand(70_000 * 4_096)
    assert made.flops == pytest.approx(flops, rel=1e-12)
    assert made.peak.flops == A100_BF16
    hours = flops / (8 * A100_BF16 * 0.4) / 3600
    assert made.hours == pytest.approx(hours)
    assert made.gpu_hours == pytest.approx(8 * hours)
    assert made.cost == pytest.approx(8 * hours * 2.5)
    assert made.parameters == 137_400_384  # the README's MosaicBERT-Base count

    table = format_estimate(made)
    assert "36,700,160,000" in table
    assert f"{hours:.2f} h" in table and f"{8 * hours * 2.5:,.2f}" in table
    assert "fill 1.0 assumed" in table and "no MDS index at" in table
    assert "a100 amp_bf16 in Composer's GPU_AVAILABLE_FLOPS" in table
    assert "MFU 0.4" in table and "dtype bf16 (precision=amp_bf16)" in table


def test_other_devices_prices_and_mfu():
    config = load_config(BASE)
    h100 = estimate(config, EstimateOptions(gpu="h100", gpus=16, mfu=0.5))
    assert h100.peak.flops == 989.5e12  # h100-sxm in Composer's table
    assert h100.hours == pytest.approx(
        base_flops_by_hand(70_000 * 4_096) / (16 * 989.5e12 * 0.5) / 3600
    )
    assert h100.cost is None and "give --gpu-hour-price" in format_estimate(h100)
    given = estimate(config, EstimateOptions(gpu="500e12", gpus=8))
    assert given.peak.flops == 500e12 and given.peak.source == "--gpu as given"
    swept = load_config(
        BASE, ["callbacks.glue_sweep.sweep=x.yaml", "callbacks.glue_sweep.gpu_hour_price=3.0"]
    )
    priced = estimate(swept, EstimateOptions())
    assert priced.price == 3.0 and priced.price_source == "callbacks.glue_sweep.gpu_hour_price"


def full_rows(length: int, masked: float) -> DataFill:
    return DataFill([StreamSample(1.0, torch.tensor([length]), masked, 1)], False, "assumed", None)


@pytest.mark.parametrize(
    ("duration", "batches"),
    [
        ("1000ba", 1000),
        ("4096000sp", 1000),
        ("4097sp", 2),  # Composer stops at the first batch that reaches it
        (f"{1000 * 4096 * 128}tok", 1000),  # tokens are real tokens: full rows here
    ],
)
def test_duration_units(duration, batches):
    config = load_config(BASE, [f"max_duration={duration}"])
    assert count_batches(config, full_rows(128, 38.4), gpus=8) == batches


def test_tokens_count_real_tokens_so_half_full_rows_take_twice_the_batches():
    config = load_config(BASE, [f"max_duration={1000 * 4096 * 128}tok"])
    assert count_batches(config, full_rows(64, 19.2), gpus=8) == 2000


def test_epochs_need_the_local_index(capsys):
    assert main(["check", str(BASE), "max_duration=2ep", "--estimate"]) == 2
    err = capsys.readouterr().err
    assert (
        "problem: --estimate: max_duration=2ep: an epoch's batches need the train split's "
        "sample count from its local MDS index, and there is no MDS index at "
    ) in err
    assert "give max_duration in ba, sp or tok" in err


@pytest.fixture(scope="module")
def short_documents(tmp_path_factory) -> tuple[Path, list[str]]:
    """A corpus of 40 documents of 20 to 1,190 characters: many rows far from full."""
    folder = tmp_path_factory.mktemp("estimate")
    texts = [text[: 20 + 30 * i] for i, text in enumerate(corpus_texts(40))]
    write_jsonl(folder / "src" / "train.jsonl", texts)
    write_jsonl(folder / "val.jsonl", corpus_texts(45)[40:])
    options = ConvertOptions(
        sources=(str(folder / "src"),),
        val_sources=(str(folder / "val.jsonl"),),
        compression="none",
    )
    convert(options, folder / "corpus", progress=False, log=lambda line: None)
    return folder / "corpus", texts


def smoke(data: Path, tmp_path: Path, *overrides: str) -> list[str]:
    return [
        str(SMOKE),
        f"data_local={data}",
        "train_loader.dataset.convert_builtin_corpus=false",
        "eval_loader.dataset.convert_builtin_corpus=false",
        f"save_folder={tmp_path}/ckpt",
        f"export_folder={tmp_path}/hf",
        *overrides,
    ]


def test_the_fill_is_measured_on_the_train_data(short_documents, tmp_path):
    data, texts = short_documents
    tokenizer = load_tokenizer("bert-base-uncased")
    # Each sample: its text's tokens, cut to leave room for [CLS] and [SEP], plus those two.
    lengths = [
        min(len(tokenizer(text, add_special_tokens=False)["input_ids"]), 126) + 2 for text in texts
    ]
    config = load_config(SMOKE, smoke(data, tmp_path, "max_duration=2ep")[1:])
    made = estimate(config, EstimateOptions(gpu="a100", gpus=1))
    assert made.data.measured and made.data.epoch_samples == 40
    assert "fill measured on 40 samples of" in made.data.source
    assert made.batches == 2  # an epoch of 40 samples is one batch of 32 (drop_last)
    samples = 2 * 32
    assert made.fill == pytest.approx(sum(lengths) / (40 * 128))
    assert made.fill < 0.9  # the short documents show
    assert made.real_tokens == pytest.approx(samples * sum(lengths) / 40)
    assert made.attention_pairs == pytest.approx(samples * sum(n * n for n in lengths) / 40)
    maskable = sum(lengths) - 2 * 40  # special tokens are never masked
    assert made.masked_tokens / (samples * maskable / 40) == pytest.approx(0.3, abs=0.05)


def test_memory_by_hand_for_a_small_model():
    config = load_config(
        SMOKE,
        [
            "precision=amp_bf16",
            "max_seq_len=16",
            "mlm_probability=0.25",
            "global_train_batch_size=8",
            "device_train_microbatch_size=4",
        ],
    )
    model = MosaicBertConfig(
        vocab_size=30528,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.1,
        attention_backend="flash_attn",
    )
    data = full_rows(16, 0.25 * 16)
    memory = estimate_memory(config, model, 1000, data, per_device=8)
    assert memory.model_states == 1000 * (16 + 2)  # fp32 states + bf16 weight copies
    tokens, masked = 4 * 16, 16  # a microbatch of 4 full rows, a quarter of them masked
    norm = 2 * 64 + 8  # LayerNorm input (bf16) and float32 mean and rstd, per token
    attention = 2 * 64 + 3 * 2 * 64 + 4 * 4 + 2 * 64 + 64 + norm  # input, qkv, lse, out, mask
    feed_forward = 2 * 64 + 2 * 2 * 128 + 2 * 128 + 2 * 128 + 128 + 64 + norm
    embeddings = norm + 64  # LayerNorm and dropout mask
    head = 3 * 2 * 64 + norm + 2 * 30528 + 4  # dense, GELU, LayerNorm, decoder; logits; lse
    expected = tokens * (embeddings + 2 * (attention + feed_forward)) + masked * head
    assert memory.activations == expected == 1_297_088
    assert memory.loss_backward == masked * 30528 * 2 + 2 * 2 * 30528 * 4  # grad + 2 pieces
    assert memory.peak == memory.model_states + expected + memory.loss_backward

    eager = estimate_memory(config, model_like(model, "eager"), 1000, data, per_device=8)
    documents_layout = 2 * (3 * 4 * 16 * 64 * 4 + 4 * 4 * 16 * 16 * 4) + 4 * 16 * 16 * 4
    no_qkv_views = tokens * 2 * (3 * 2 * 64 + 4 * 4)  # eager keeps float32 copies instead
    assert eager.activations == expected - no_qkv_views + documents_layout

    auto = load_config(SMOKE, ["device_train_microbatch_size=auto", "global_train_batch_size=8"])
    assert estimate_memory(auto, model, 1000, data, per_device=8).microbatch_rows == 8


def model_like(model: MosaicBertConfig, backend: str) -> MosaicBertConfig:
    return MosaicBertConfig(**{**model.to_dict(), "attention_backend": backend})


def test_the_command_prints_the_estimate_before_the_verdict(short_documents, tmp_path, capsys):
    data, _ = short_documents
    assert main(["check", *smoke(data, tmp_path), "--estimate", "--gpus", "1"]) == 0
    out = capsys.readouterr().out
    assert out.index("estimate for") < out.index("training FLOPs") < out.index("no problems found")
    assert "fill measured on" in out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--estimate", "--mfu", "0"], "--mfu must be in (0, 1]"),
        (["--estimate", "--mfu", "1.5"], "--mfu must be in (0, 1]"),
        (["--estimate", "--gpus", "0"], "--gpus must be at least 1, got 0"),
        (
            ["--estimate", "--gpu", "b200"],
            "--gpu 'b200' is unknown; choose one of a100, h100, h200",
        ),
        (["--estimate", "--gpu-hour-price", "-1"], "--gpu-hour-price must not be negative"),
        (["--gpus", "4"], "--gpus needs --estimate; add --estimate"),
        (["--gpu", "h100", "--mfu", "0.5"], "--gpu, --mfu need --estimate; add --estimate"),
    ],
)
def test_bad_options_are_one_line_errors(options, message, capsys):
    assert main(["check", str(BASE), *options]) == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if message in line]
    assert line.startswith("mosaic-pretrain check: error: ")


def test_a_glue_sweep_has_no_estimate(capsys):
    assert main(["check", str(CONFIGS / "glue" / "smoke.yaml"), "--estimate"]) == 2
    err = capsys.readouterr().err
    assert "--estimate estimates a pretraining recipe" in err and "is a GLUE sweep" in err


def test_a_batch_that_does_not_split_over_the_gpus(tmp_path, capsys):
    folders = [f"save_folder={tmp_path}/ckpt", f"export_folder={tmp_path}/hf"]
    assert main(["check", str(SMOKE), *folders, "--estimate", "--gpus", "3"]) == 2
    assert "does not split over --gpus 3" in capsys.readouterr().err


def test_the_peak_is_the_entry_composer_reads_for_the_precision():
    fp32 = estimate(load_config(SMOKE), EstimateOptions(gpu="a100", gpus=1))
    assert fp32.peak.flops == 19.5e12 and "a100 fp32" in fp32.peak.source
    assert math.isclose(fp32.hours * 3600 * 19.5e12 * 0.4, fp32.flops)
