"""Gradient accumulation: the gradient the optimizer applies is that of the mean MLM loss over
every masked token of the global batch, whatever the microbatch size, packing and number of
ranks (microbatches weighed by masked tokens, not by samples).

Each run trains one batch with the real Trainer and records its batch and gradients
(tests/gradient_recorder.py); the reference is the same model at the same weights on the whole
batch at once. Paragraph-sized documents make rows uneven, so microbatches hold very different
numbers of masked tokens (and, packed, of documents).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mosaic_pretrain.commands.train import train
from mosaic_pretrain.config import load_config
from mosaic_pretrain.train.builders import (
    build_composer_model,
    build_dataloader,
    build_tokenizer,
)
from mosaic_pretrain.train.microbatches import count_tokens, split_into_microbatches, with_layout
from tests.gradient_recorder import recording_into

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"
RECORDER = Path(__file__).resolve().parent / "gradient_recorder.py"
LAUNCHER = Path(sys.executable).parent / "composer"
ONE_BATCH = [
    "model.model_config.num_hidden_layers=1",
    "model.model_config.attention_probs_dropout_prob=0.0",  # the reference must see the same net
    "global_train_batch_size=32",
    "max_duration=1ba",
    "save_interval=1000ba",
    "eval_loader=null",
    "export_folder=null",
    "log_to_console=false",
    "callbacks.optimizer_monitor=null",
]
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


@pytest.fixture(scope="module")
def paragraphs(tmp_path_factory):
    """Short documents of uneven length: one paragraph of the shipped corpus each."""
    from mosaic_pretrain.bench.training_step import write_benchmark_corpus

    return write_benchmark_corpus(tmp_path_factory.mktemp("data"), "paragraphs", 3000)


def recipe(paragraphs: Path, folder: Path, microbatch: int, packing: bool) -> list[str]:
    return [
        *ONE_BATCH,
        f"data_local={paragraphs}",
        f"save_folder={folder}/checkpoints",
        f"device_train_microbatch_size={microbatch}",
        f"train_loader.dataset.packing={str(packing).lower()}",
    ]


def rows_of_first_batch(overrides: list[str]) -> int:
    config = load_config(SMOKE, overrides)
    batch_size = config.global_train_batch_size
    spec = build_dataloader(config.train_loader, config, build_tokenizer(config), batch_size)
    return len(next(iter(spec.dataloader))["input_ids"])


def whole_batch_gradients(overrides: list[str], weights: dict, batch: dict) -> dict:
    """The gradient of the mean loss over every masked token of `batch`, in one pass."""
    config = load_config(SMOKE, overrides)
    model = build_composer_model(config, build_tokenizer(config))
    model.load_state_dict(weights)
    model.train()
    outputs = model({name: batch[name] for name in MODEL_INPUTS})
    model.loss(outputs, batch).backward()
    return {name: parameter.grad for name, parameter in model.named_parameters()}


def assert_same_gradients(recorded: dict, expected: dict) -> None:
    assert recorded.keys() == expected.keys()
    for name, gradient in recorded.items():
        torch.testing.assert_close(gradient, expected[name], rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("packing", [False, True], ids=["unpacked", "packed"])
@pytest.mark.parametrize("microbatches", [1, 2, 4])
def test_microbatches_give_the_gradient_of_the_whole_batch(
    paragraphs, tmp_path, monkeypatch, microbatches, packing
):
    from mosaic_pretrain.train import trainer

    rows = rows_of_first_batch(recipe(paragraphs, tmp_path, 1, packing))  # packed: fewer rows
    # A power of two, as the recipe's rule (it must divide the global batch) asks.
    microbatch = 1 << (-(-rows // microbatches) - 1).bit_length()
    overrides = recipe(paragraphs, tmp_path, microbatch, packing)
    monkeypatch.setattr(trainer, "build_callbacks", recording_into(tmp_path / "recorded"))
    train(load_config(SMOKE, overrides)).close()
    recorded = torch.load(tmp_path / "recorded" / "rank0.pt")
    batch = recorded["batch"]
    # The case this guards: microbatches whose shares of documents and of masked tokens differ.
    parts = split_into_microbatches(with_layout(batch), microbatch)
    assert len(parts) == microbatches
    if microbatches > 1:
        masked = [count_tokens(part)["loss_generating"] for part in parts]
        documents = [len(part["sample_index"]) for part in parts]
        assert [m / sum(masked) for m in masked] != [d / sum(documents) for d in documents]
    expected = whole_batch_gradients(overrides, recorded["weights"], batch)
    assert_same_gradients(recorded["gradients"], expected)


@pytest.mark.slow
@pytest.mark.skipif(not LAUNCHER.exists(), reason="Composer's launcher is not installed")
def test_two_ranks_give_the_gradient_of_the_global_batch(paragraphs, tmp_path):
    """Two CPU ranks (gloo), each packing its own 16 documents into rows and splitting them into
    microbatches: after DDP's all-reduce both hold the gradient of the mean loss over the masked
    tokens of all 32 documents."""
    overrides = recipe(paragraphs, tmp_path, 2, packing=True)
    command = [
        str(LAUNCHER),
        "-n",
        "2",
        "--master_port",
        str(29500 + (os.getpid() + 7) % 1000),
        str(RECORDER),
        str(tmp_path / "recorded"),
        "--",
        "train",
        str(SMOKE),
        *overrides,
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ranks = [torch.load(tmp_path / "recorded" / f"rank{rank}.pt") for rank in (0, 1)]
    masked = [int((r["batch"]["labels"] != -100).sum()) for r in ranks]
    assert masked[0] != masked[1]  # the ranks' shares differ: plain averaging would be wrong
    batch = {name: torch.cat([r["batch"][name] for r in ranks]) for name in MODEL_INPUTS}
    expected = whole_batch_gradients(overrides, ranks[0]["weights"], batch)
    for recorded in ranks:
        assert_same_gradients(recorded["gradients"], expected)


def test_a_microbatch_without_masked_tokens_weighs_almost_nothing_but_not_zero():
    """Composer divides by the summed weights: a batch with no masked token (a tiny
    mlm_probability) must not make it divide by 0, nor change the other microbatches' shares."""
    from mosaic_pretrain.train.microbatches import NO_MASKED_TOKENS

    mask = torch.ones(2, 6, dtype=torch.long)
    unmasked = {"attention_mask": mask, "labels": torch.full((2, 6), -100)}
    counted = count_tokens(with_layout(unmasked))
    assert counted == {"total": 12, "loss_generating": NO_MASKED_TOKENS}
    assert count_tokens(unmasked) == counted
    labels = unmasked["labels"].clone()
    labels[0, 2] = 7
    one = {"attention_mask": mask, "labels": labels}
    assert count_tokens(with_layout(one))["loss_generating"] == 1
    share = torch.tensor(1 / (1 + NO_MASKED_TOKENS), dtype=torch.float32)
    assert share.item() == 1.0  # the masked microbatch's weight, as a float32 loss scale
