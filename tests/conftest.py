"""Tiny-model factories shared by the tests: small enough that a forward pass takes milliseconds."""

import os

# No hub access here or in CI: fail at once instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch

from mosaic_pretrain.model import MosaicBertConfig
from mosaic_pretrain.model.attention import backend_unavailable_reason

TINY = dict(
    vocab_size=128,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    alibi_starting_size=16,
    attention_backend="eager",
)

# The `gpu` tests' model: the tiny one's head size (32 / 4 = 8) is below what the CUDA kernels
# take (FlexAttention's and FlashAttention's need at least 16), so they widen it to 256 / 4 = 64.
GPU_SIZES = dict(hidden_size=256, num_attention_heads=4, intermediate_size=512)

# Backends that can run on this machine's CPU; flash_attn has its own CUDA-only tests.
CPU_BACKENDS = [
    name for name in ("eager", "sdpa", "flex") if backend_unavailable_reason(name) is None
]


def make_tiny_config(**overrides) -> MosaicBertConfig:
    return MosaicBertConfig(**{**TINY, **overrides})


@pytest.fixture
def tiny_config():
    """Factory: `tiny_config(attention_backend="sdpa", num_labels=3)`."""
    return make_tiny_config


def make_ids(lengths: list[int], seqlen: int, vocab_size: int = 128, seed: int = 0):
    """Right-padded random `input_ids` and a 0/1 `attention_mask` for rows of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (len(lengths), seqlen), generator=generator)
    mask = (torch.arange(seqlen)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


def packed_mlm_batch(seed: int = 0) -> dict:
    """Rows holding one or two documents, right padding, 30% of real tokens masked."""
    ids, mask = make_ids([16, 9, 12, 5], 16, seed=seed)
    mask[0, 10:] = 2  # the first row packs two documents
    generator = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(ids.shape, generator=generator) < 0.3) & mask.bool()
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "labels": labels,
        "sample_index": torch.arange(5),
    }


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def bert_tokenizer():
    from mosaic_pretrain.data.tokenizer import load_tokenizer

    return load_tokenizer("bert-base-uncased")
