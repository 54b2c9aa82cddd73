"""Unpadding: padding and batch neighbours never change a sequence's result; packed documents
behave exactly as if each ran alone."""

import pytest
import torch

from mosaic_pretrain.model import MosaicBertForMaskedLM, MosaicBertModel
from mosaic_pretrain.model.padding import (
    document_layout,
    from_document_batch,
    gather_tokens,
    scatter_tokens,
    to_document_batch,
    unpad_input,
)
from tests.conftest import CPU_BACKENDS, make_ids

TOL = dict(rtol=1e-5, atol=1e-5)


def test_unpad_input_on_a_known_mask():
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 2, 2]])
    indices, cu_seqlens, max_seqlen = unpad_input(mask)
    assert indices.tolist() == [0, 1, 2, 6, 7, 8, 9, 10, 11]
    assert cu_seqlens.tolist() == [0, 3, 5, 7, 9]
    assert cu_seqlens.dtype == torch.int32
    assert max_seqlen == 3


def test_documents_split_at_rows_even_with_the_same_label():
    _, cu_seqlens, _ = unpad_input(torch.tensor([[1, 1], [1, 1]]))
    assert cu_seqlens.tolist() == [0, 2, 4]


def test_padding_inside_a_run_starts_a_new_document():
    _, cu_seqlens, _ = unpad_input(torch.tensor([[1, 1, 0, 1, 1, 1]]))
    assert cu_seqlens.tolist() == [0, 2, 5]


def test_all_padding_is_an_error():
    with pytest.raises(ValueError, match="no real token"):
        unpad_input(torch.zeros(2, 3, dtype=torch.long))


def test_gather_scatter_and_document_layout_round_trip():
    mask = torch.tensor([[1, 1, 2, 0], [0, 3, 3, 3]])
    padded = torch.randn(2, 4, 5)
    indices, cu_seqlens, max_seqlen = unpad_input(mask)
    tokens = gather_tokens(padded, indices)
    restored = scatter_tokens(tokens, indices, 2, 4)
    torch.testing.assert_close(restored, padded * mask.ne(0)[..., None])
    document_ids, positions = document_layout(cu_seqlens, tokens.shape[0])
    assert document_ids.tolist() == [0, 0, 1, 2, 2, 2]
    assert positions.tolist() == [0, 1, 0, 0, 1, 2]
    per_document = to_document_batch(tokens, document_ids, positions, 3, max_seqlen)
    assert per_document.shape == (3, 3, 5)
    torch.testing.assert_close(from_document_batch(per_document, document_ids, positions), tokens)


def models_with_shared_weights(tiny_config, backend, model_class=MosaicBertModel):
    model = model_class(tiny_config(attention_backend=backend)).eval()
    return model


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_padding_and_neighbours_do_not_change_a_sequence(tiny_config, backend):
    model = models_with_shared_weights(tiny_config, backend)
    ids, _ = make_ids([11], 11, seed=3)
    with torch.no_grad():
        alone = model(ids).last_hidden_state[0]
        # Right padding to 20, beside two other sequences of other lengths.
        batch_ids, batch_mask = make_ids([18, 11, 4], 20, seed=4)
        batch_ids[1, :11] = ids[0]
        right = model(batch_ids, batch_mask).last_hidden_state[1, :11]
        # Left padding.
        left_ids = torch.nn.functional.pad(ids, (6, 0))
        left_mask = torch.nn.functional.pad(torch.ones_like(ids), (6, 0))
        left = model(left_ids, left_mask).last_hidden_state[0, 6:]
        padded_outputs = model(batch_ids, batch_mask).last_hidden_state[1, 11:]
    torch.testing.assert_close(right, alone, **TOL)
    torch.testing.assert_close(left, alone, **TOL)
    assert torch.all(padded_outputs == 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_packed_documents_equal_each_document_alone(tiny_config, backend):
    """Forward outputs and parameter gradients: a document packed beside others, with a loss on
    its own tokens only, matches the document run alone."""
    model = models_with_shared_weights(tiny_config, backend, MosaicBertForMaskedLM)
    first, _ = make_ids([9], 9, seed=5)
    second, _ = make_ids([14], 14, seed=6)
    packed_ids = torch.cat([first, second, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    packed_mask = torch.tensor([[1] * 9 + [2] * 14 + [0] * 5])

    def logits_and_grads(ids, mask, positions):
        model.zero_grad()
        logits = model(ids, mask).logits[0, positions]
        logits.square().mean().backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    for doc_ids, positions in ((first, slice(0, 9)), (second, slice(9, 23))):
        alone_logits, alone_grads = logits_and_grads(doc_ids, None, slice(None))
        packed_logits, packed_grads = logits_and_grads(packed_ids, packed_mask, positions)
        torch.testing.assert_close(packed_logits, alone_logits, **TOL)
        for grad, grad_alone in zip(packed_grads, alone_grads, strict=True):
            torch.testing.assert_close(grad, grad_alone, rtol=1e-4, atol=1e-6)


def test_feed_forward_never_sees_padding(tiny_config):
    model = MosaicBertModel(tiny_config())
    seen_shapes = []
    model.encoder.layer[0].mlp.register_forward_hook(
        lambda module, args, output: seen_shapes.append(tuple(args[0].shape))
    )
    ids, mask = make_ids([7, 3, 12], 16)
    model(ids, mask)
    assert seen_shapes == [(7 + 3 + 12, 32)]
