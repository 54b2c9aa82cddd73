import pytest
import torch
import torch.nn.functional as F

from mosaic_pretrain.model import (
    MosaicBertForMaskedLM,
    MosaicBertForSequenceClassification,
    MosaicBertModel,
)
from mosaic_pretrain.model.modeling import LowPrecisionLayerNorm, masked_lm_loss
from tests.conftest import make_ids


def mlm_batch(seed: int = 0):
    ids, mask = make_ids([16, 9, 12], 16, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(ids.shape, generator=generator) < 0.3) & mask.bool()
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    return ids, mask, labels


def test_sparse_mlm_head_equals_dense_cross_entropy(tiny_config):
    model = MosaicBertForMaskedLM(tiny_config()).eval()
    ids, mask, labels = mlm_batch()
    with torch.no_grad():
        sparse = model(ids, mask, labels=labels)
        dense_logits = model(ids, mask).logits  # (B, S, V)
    masked = labels != -100
    assert sparse.logits.shape == (int(masked.sum()), 128)
    torch.testing.assert_close(sparse.logits, dense_logits[masked], rtol=1e-5, atol=1e-6)
    dense_loss = F.cross_entropy(dense_logits.reshape(-1, 128), labels.reshape(-1))
    torch.testing.assert_close(sparse.loss, dense_loss, rtol=1e-6, atol=1e-6)
    assert torch.equal(ids.reshape(-1)[sparse.masked_token_indices], labels[masked])


def test_mlm_loss_of_a_batch_without_masked_tokens_is_zero_not_nan():
    logits = torch.randn(0, 10, requires_grad=True)
    loss = masked_lm_loss(logits, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()


def test_decoder_is_tied_to_word_embeddings(tiny_config):
    model = MosaicBertForMaskedLM(tiny_config())
    assert model.head.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_model_outputs_have_transformers_shapes(tiny_config):
    model = MosaicBertModel(tiny_config()).eval()
    ids, mask = make_ids([6, 4], 8)
    out = model(ids, mask, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 8, 32)
    assert out.pooler_output.shape == (2, 32)
    assert len(out.hidden_states) == 3  # embeddings + 2 layers
    assert all(h.shape == (2, 8, 32) for h in out.hidden_states)
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    as_tuple = model(ids, mask, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.last_hidden_state)


def test_attention_probabilities_are_refused(tiny_config):
    model = MosaicBertModel(tiny_config())
    ids, mask = make_ids([4], 4)
    with pytest.raises(ValueError, match="attention probabilities"):
        model(ids, mask, output_attentions=True)


def test_mismatched_mask_shape_is_an_error(tiny_config):
    model = MosaicBertModel(tiny_config())
    ids, mask = make_ids([4], 4)
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(ids, mask[:, :3])


@pytest.mark.parametrize(
    ("num_labels", "labels", "expected_loss"),
    [
        (3, torch.tensor([0, 2]), lambda logits, y: F.cross_entropy(logits, y)),
        (1, torch.tensor([0.5, -1.0]), lambda logits, y: F.mse_loss(logits.squeeze(-1), y)),
    ],
    ids=["classification", "regression"],
)
def test_sequence_classification_losses(tiny_config, num_labels, labels, expected_loss):
    model = MosaicBertForSequenceClassification(tiny_config(num_labels=num_labels)).eval()
    ids, mask = make_ids([7, 5], 7)
    out = model(ids, mask, labels=labels)
    assert out.logits.shape == (2, num_labels)
    torch.testing.assert_close(out.loss, expected_loss(out.logits, labels))
    out.loss.backward()
    assert model.classifier.weight.grad is not None


def test_regression_with_several_outputs_and_multi_label(tiny_config):
    ids, mask = make_ids([7, 5, 3], 7)
    regression = MosaicBertForSequenceClassification(
        tiny_config(num_labels=2, problem_type="regression")
    )
    out = regression(ids, mask, labels=torch.randn(3, 2))
    assert out.loss.shape == ()
    multi_label = MosaicBertForSequenceClassification(
        tiny_config(num_labels=3, problem_type="multi_label_classification")
    )
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    out = multi_label(ids, mask, labels=targets)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, targets))


def test_int32_class_labels_work(tiny_config):
    model = MosaicBertForSequenceClassification(tiny_config(num_labels=3))
    ids, mask = make_ids([7, 5], 7)
    out = model(ids, mask, labels=torch.tensor([2, 0], dtype=torch.int32))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([2, 0])))


def test_unsupported_arguments_are_errors_not_ignored(tiny_config):
    model = MosaicBertForMaskedLM(tiny_config())
    ids, mask = make_ids([4], 4)
    with pytest.raises(ValueError, match="does not take position_ids"):
        model(ids, mask, position_ids=torch.arange(4)[None])
    model(ids, mask, position_ids=None)  # what generic callers pass is fine


def test_classification_reads_the_first_real_token_whatever_the_padding(tiny_config):
    model = MosaicBertForSequenceClassification(tiny_config(num_labels=2)).eval()
    ids, _ = make_ids([6], 6)
    left_ids = F.pad(ids, (3, 0))
    left_mask = F.pad(torch.ones_like(ids), (3, 0))
    with torch.no_grad():
        torch.testing.assert_close(model(left_ids, left_mask).logits, model(ids).logits)


def test_hidden_dropout_only_in_training(tiny_config):
    model = MosaicBertModel(tiny_config(hidden_dropout_prob=0.3))
    ids, mask = make_ids([8, 5], 8)
    assert not torch.allclose(
        model(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state
    )
    model.eval()
    torch.testing.assert_close(
        model(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state
    )


def test_low_precision_layernorm_runs_in_the_autocast_dtype():
    norm = LowPrecisionLayerNorm(16)
    hidden = torch.randn(5, 16)
    torch.testing.assert_close(norm(hidden), F.layer_norm(hidden, (16,), eps=norm.eps))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(hidden)
    assert out.dtype == torch.bfloat16
    expected = F.layer_norm(hidden.bfloat16(), (16,), norm.weight.bfloat16(), norm.bias.bfloat16())
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("low_precision", [True, False])
def test_bf16_autocast_training_step_on_cpu(tiny_config, low_precision):
    model = MosaicBertForMaskedLM(
        tiny_config(attention_backend="sdpa", low_precision_layernorm=low_precision)
    )
    ids, mask, labels = mlm_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask, labels=labels)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
