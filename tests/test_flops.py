"""The FLOPs formula behind MFU, against torch's own count of a real forward pass."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mosaic_pretrain.model import MosaicBertForMaskedLM, hf_bert_for_masked_lm
from mosaic_pretrain.train.flops import forward_flops, training_flops


def equal_length_batch(rows: int, length: int, vocab: int):
    """Equal lengths: the eager kernels then compute exactly the real-token work."""
    ids = torch.randint(1000 % vocab, vocab, (rows, length))
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    labels[:, ::3] = ids[:, ::3]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def counted_forward_flops(model, batch) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**batch)
    return counter.get_total_flops()


def test_mosaic_bert_formula_matches_counted_matmuls(tiny_config):
    config = tiny_config(attention_backend="eager", vocab_size=256)
    model = MosaicBertForMaskedLM(config).eval()
    batch = equal_length_batch(3, 16, 256)
    expected = forward_flops(32, 64, 2, 256, True, torch.tensor([16, 16, 16]), 3 * 6)
    assert counted_forward_flops(model, batch) == expected
    assert training_flops(config, batch) == 3 * expected


def test_hf_bert_formula_counts_the_sparse_work_it_must_do(tiny_config):
    """The baseline computes its head on every token; MFU credits only masked tokens."""
    config = tiny_config(vocab_size=256)
    model = hf_bert_for_masked_lm(config, attn_implementation="eager").eval()
    batch = equal_length_batch(3, 16, 256)
    dense_head = 3 * 16 * (2 * 32 * 32 + 2 * 32 * 256)
    sparse_head = 3 * 6 * (2 * 32 * 32 + 2 * 32 * 256)
    formula = forward_flops(32, 64, 2, 256, False, torch.tensor([16, 16, 16]), 3 * 6)
    assert counted_forward_flops(model, batch) == formula - sparse_head + dense_head


@pytest.mark.parametrize(
    "activation, matched, width, gated",
    [("gelu", False, 96, False), ("xatlu", True, 96, False), ("swiglu", True, 64, True),
     ("xgeglu", False, 96, True)],
)  # fmt: skip
def test_the_formula_follows_the_feed_forward_variant(tiny_config, activation, matched, width,
                                                      gated):  # fmt: skip
    """Plain MLPs cost 4HI, GLUs 6HI with I their own width (2/3 of 96 when matched)."""
    config = tiny_config(attention_backend="eager", vocab_size=256, intermediate_size=96,
                         ffn_activation=activation, ffn_param_matched=matched)  # fmt: skip
    model = MosaicBertForMaskedLM(config).eval()
    batch = equal_length_batch(3, 16, 256)
    expected = forward_flops(32, width, 2, 256, gated, torch.tensor([16, 16, 16]), 3 * 6)
    assert counted_forward_flops(model, batch) == expected
    assert training_flops(config, batch) == 3 * expected
