import pytest
import torch

from mosaic_pretrain.model import MosaicBertModel
from mosaic_pretrain.model.alibi import alibi_bias, alibi_slopes
from tests.conftest import CPU_BACKENDS, make_ids


def powers_of_two(*exponents: float) -> list[float]:
    return [2.0**e for e in exponents]


# Expected slopes from the ALiBi paper's recipe, written out by hand.
EXPECTED_SLOPES = {
    8: powers_of_two(-1, -2, -3, -4, -5, -6, -7, -8),
    16: powers_of_two(*[-0.5 * (i + 1) for i in range(16)]),
    # Not a power of two: the 8-head slopes, then every other slope of 16 heads.
    12: powers_of_two(-1, -2, -3, -4, -5, -6, -7, -8, -0.5, -1.5, -2.5, -3.5),
    6: powers_of_two(-2, -4, -6, -8, -1, -3),
}


@pytest.mark.parametrize("heads", sorted(EXPECTED_SLOPES))
def test_slopes_follow_the_standard_schedule(heads):
    torch.testing.assert_close(
        alibi_slopes(heads), torch.tensor(EXPECTED_SLOPES[heads]), rtol=1e-6, atol=0
    )


def test_bias_is_symmetric_linear_in_distance():
    slopes = alibi_slopes(4)
    bias = alibi_bias(slopes, 9)
    assert bias.shape == (4, 9, 9)
    torch.testing.assert_close(bias, bias.transpose(1, 2))
    assert torch.all(bias.diagonal(dim1=1, dim2=2) == 0)
    assert bias[2, 1, 7].item() == pytest.approx(-slopes[2].item() * 6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_runs_past_the_training_length(tiny_config, backend):
    """A model whose bias table starts at 16 positions runs on 100 tokens, and every backend
    agrees with the reference there; the grown table never enters the weights."""
    config = tiny_config(alibi_starting_size=16)
    reference = MosaicBertModel(config).eval()
    model = MosaicBertModel(tiny_config(alibi_starting_size=16, attention_backend=backend)).eval()
    model.load_state_dict(reference.state_dict())
    ids, mask = make_ids([100, 37], 100)
    with torch.no_grad():
        expected = reference(ids, mask).last_hidden_state
        actual = model(ids, mask).last_hidden_state
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    assert not any("alibi" in key for key in model.state_dict())


def test_model_has_no_buffers_for_ddp_to_overwrite(tiny_config):
    """DDP broadcasts rank 0's buffers every step; ALiBi state must not live in one."""
    model = MosaicBertModel(tiny_config())
    assert list(model.buffers()) == []


def test_slopes_stay_float32_when_the_model_is_cast(tiny_config):
    model = MosaicBertModel(tiny_config()).to(torch.bfloat16)
    ids, mask = make_ids([6], 6)
    model(ids, mask)
    assert torch.equal(model.encoder.alibi_slopes, alibi_slopes(4))  # float32, exact


def test_slopes_follow_the_module_and_are_no_weights(tiny_config):
    model = MosaicBertModel(tiny_config())
    assert not any("slope" in name for name in model.state_dict())  # never checkpointed
    assert not any("slope" in name for name, _ in model.named_buffers())  # never broadcast
    model.to("meta")
    assert model.encoder.alibi_slopes.device.type == "meta"
    model.to_empty(device="cpu")
    assert torch.equal(model.encoder.alibi_slopes, alibi_slopes(4))


def test_alibi_makes_attention_depend_on_distance(tiny_config):
    """Without position embeddings, only ALiBi tells positions apart: shuffling the tokens must
    change each token's output, not merely reorder the outputs."""
    model = MosaicBertModel(tiny_config()).eval()
    ids, mask = make_ids([12], 12)
    order = torch.tensor([3, 0, 7, 1, 11, 5, 2, 9, 4, 10, 6, 8])
    with torch.no_grad():
        original = model(ids, mask).last_hidden_state[0]
        shuffled = model(ids[:, order], mask).last_hidden_state[0]
    assert not torch.allclose(shuffled, original[order], atol=1e-4)


def test_symmetric_alibi_cannot_tell_left_from_right(tiny_config):
    """The bias depends on |i - j| only, so a reversed sequence gives the reversed outputs."""
    model = MosaicBertModel(tiny_config()).eval()
    ids, mask = make_ids([12], 12)
    with torch.no_grad():
        original = model(ids, mask).last_hidden_state[0]
        reversed_ = model(ids.flip(1), mask).last_hidden_state[0]
    torch.testing.assert_close(reversed_, original.flip(0), rtol=1e-5, atol=1e-5)
