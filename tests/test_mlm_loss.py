"""The lean masked-LM loss: the reference's numbers, without its float32 copy kept for backward."""

import pytest
import torch
import torch.nn.functional as F

from mosaic_pretrain.model.mlm_loss import PIECES, masked_lm_loss

VOCAB = 50


def reference_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    summed = F.cross_entropy(logits.float(), labels, reduction="sum")
    return summed / max(labels.numel(), 1)


def loss_and_grad(loss_fn, logits: torch.Tensor, labels: torch.Tensor):
    leaf = logits.detach().clone().requires_grad_(True)
    loss = loss_fn(leaf, labels)
    (3.0 * loss).backward()  # a non-unit upstream gradient, as under loss scaling
    return loss.detach(), leaf.grad


@pytest.mark.parametrize("rows", [0, 1, PIECES - 3, 37])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_and_gradient_equal_float32_cross_entropy(rows, dtype):
    generator = torch.Generator().manual_seed(rows)
    logits = (4 * torch.randn(rows, VOCAB, generator=generator)).to(dtype)
    labels = torch.randint(0, VOCAB, (rows,), generator=generator)
    labels[::5] = -100  # unpredicted rows add nothing but still count in the mean, as before
    loss, grad = loss_and_grad(masked_lm_loss, logits, labels)
    expected_loss, expected_grad = loss_and_grad(reference_loss, logits, labels)
    assert grad.dtype == dtype
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-6)
    if dtype == torch.float32:
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)
    else:  # both are float32 arithmetic rounded once to bf16: at most one bf16 step apart
        torch.testing.assert_close(grad, expected_grad, rtol=2**-7, atol=1e-7)


def test_under_bf16_autocast_it_still_computes_in_float32():
    logits = torch.randn(20, VOCAB).to(torch.bfloat16)
    labels = torch.randint(0, VOCAB, (20,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = masked_lm_loss(logits, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, reference_loss(logits, labels), rtol=1e-6, atol=1e-6)


def saved_for_backward(loss_fn, logits: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    leaf = logits.detach().clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss_fn(leaf, labels)
    return saved


def test_only_the_bf16_logits_and_one_float_per_row_are_kept_for_backward():
    rows = 64
    logits = torch.randn(rows, VOCAB).to(torch.bfloat16)
    labels = torch.randint(0, VOCAB, (rows,))

    def float32_bytes(saved):
        return sum(t.numel() * 4 for t in saved if t.dtype == torch.float32)

    # The reference keeps a float32 (rows, vocab) tensor: the check below would see it.
    assert float32_bytes(saved_for_backward(reference_loss, logits, labels)) >= rows * VOCAB * 4
    assert float32_bytes(saved_for_backward(masked_lm_loss, logits, labels)) == rows * 4
