"""Every attention backend against the readable `eager` reference, forward and backward."""

import logging

import pytest
import torch

from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.model import MosaicBertForMaskedLM, MosaicBertModel, attention
from mosaic_pretrain.model.alibi import alibi_slopes
from mosaic_pretrain.model.attention import (
    ATTENTION_BACKENDS,
    VarlenBatch,
    backend_unavailable_reason,
    resolve_backend,
)
from tests.conftest import CPU_BACKENDS, GPU_SIZES, make_ids

HEADS, HEAD_DIM = 4, 8


def varlen_batch(document_lengths: list[int]) -> VarlenBatch:
    lengths = torch.tensor(document_lengths)
    cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    return VarlenBatch(
        cu_seqlens, max(document_lengths), alibi_slopes(HEADS), sum(document_lengths)
    )


def naive_attention(query, key, value, document_lengths):
    """Attention one document at a time, straight from the definition."""
    outputs, start = [], 0
    slopes = alibi_slopes(HEADS)
    for length in document_lengths:
        q, k, v = (t[start : start + length].transpose(0, 1) for t in (query, key, value))
        positions = torch.arange(length)
        bias = -slopes[:, None, None] * (positions[:, None] - positions[None, :]).abs()
        scores = q @ k.transpose(-1, -2) / HEAD_DIM**0.5 + bias
        outputs.append((scores.softmax(-1) @ v).transpose(0, 1))
        start += length
    return torch.cat(outputs)


DOCUMENTS = [5, 17, 1, 32, 9]  # one single-token document, lengths not multiples of anything


def random_qkv(total: int):
    return [torch.randn(total, HEADS, HEAD_DIM, requires_grad=True) for _ in range(3)]


def tiles_from_the_definition(document_lengths: list[int], block: int):
    """(partial, full) tiles by evaluating the whole (T, T) same-document mask."""
    document_ids = torch.repeat_interleave(torch.arange(len(document_lengths)),
                                           torch.tensor(document_lengths))  # fmt: skip
    total, tiles = len(document_ids), -(-len(document_ids) // block)
    padded = torch.full((tiles * block,), -1)
    padded[:total] = document_ids
    real = padded >= 0
    same = (padded[:, None] == padded[None, :]) & real[:, None] & real[None, :]
    same = same.reshape(tiles, block, tiles, block)
    full = same.all(dim=3).all(dim=1)  # a short last tile holds padding: never full
    return same.any(dim=3).any(dim=1) & ~full, full


@pytest.mark.parametrize("block", [4, 16, 128])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_document_tiles_match_the_whole_mask(block, seed):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 3 * block, (12,), generator=generator).tolist()
    lengths[3] = 2 * block  # a document spanning whole tiles, so some tiles are full
    batch = varlen_batch(lengths)
    document_ids, _ = batch.document_layout()
    partial, full = attention.document_tiles(document_ids, batch.cu_seqlens, sum(lengths), block)
    expected_partial, expected_full = tiles_from_the_definition(lengths, block)
    assert torch.equal(partial, expected_partial) and torch.equal(full, expected_full)
    if block == attention.FLEX_BLOCK:  # the BlockMask attends where create_block_mask's does
        from torch.nn.attention.flex_attention import create_block_mask

        total = sum(lengths)
        ours = attention.flex_block_mask(batch)
        theirs = create_block_mask(
            lambda b, h, q, k: document_ids[q] == document_ids[k], None, None, total, total,
            device="cpu",
        )  # fmt: skip
        assert torch.equal(ours.to_dense(), theirs.to_dense())


def test_eager_matches_attention_from_the_definition():
    query, key, value = random_qkv(sum(DOCUMENTS))
    actual = ATTENTION_BACKENDS["eager"](query, key, value, varlen_batch(DOCUMENTS), 0.0)
    expected = naive_attention(query, key, value, DOCUMENTS)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_matches_eager_forward_and_backward(backend):
    qkv = random_qkv(sum(DOCUMENTS))
    qkv_ref = [t.detach().clone().requires_grad_() for t in qkv]
    out = ATTENTION_BACKENDS[backend](*qkv, varlen_batch(DOCUMENTS), 0.0)
    ref = ATTENTION_BACKENDS["eager"](*qkv_ref, varlen_batch(DOCUMENTS), 0.0)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    for grad, grad_ref in zip((t.grad for t in qkv), (t.grad for t in qkv_ref), strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_whole_model_agrees_with_eager(tiny_config, backend):
    """Same weights, packed and padded batch: logits, loss and every parameter gradient."""
    reference = MosaicBertForMaskedLM(tiny_config())
    model = MosaicBertForMaskedLM(tiny_config(attention_backend=backend))
    model.load_state_dict(reference.state_dict())
    ids, mask = make_ids([20, 7, 13], 24)
    mask[0, 9:20] = 2  # row 0 holds two packed documents
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, torch.full_like(ids, -100)) * mask.ne(0)
    labels[mask == 0] = -100
    out, ref = model(ids, mask, labels=labels), reference(ids, mask, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
    out.loss.backward()
    ref.loss.backward()
    for (name, param), param_ref in zip(
        model.named_parameters(), reference.parameters(), strict=True
    ):
        torch.testing.assert_close(param.grad, param_ref.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_attention_dropout_is_applied_in_training_only(tiny_config):
    model = MosaicBertModel(tiny_config(attention_backend="sdpa", attention_probs_dropout_prob=0.5))
    ids, mask = make_ids([10, 6], 10)
    model.train()
    first, second = (model(ids, mask).last_hidden_state for _ in range(2))
    assert not torch.allclose(first, second)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state
        )


def test_auto_picks_sdpa_on_cpu_and_says_so(tiny_config, caplog):
    model = MosaicBertModel(tiny_config(attention_backend="auto"))
    ids, mask = make_ids([5], 5)
    with caplog.at_level(logging.INFO, logger="mosaic_pretrain"):
        model(ids, mask)
    assert model.attention_backend_in_use == "sdpa"
    assert "sdpa backend on cpu" in caplog.text


def test_auto_on_cuda_picks_by_dtype(monkeypatch):
    """flash_attn only for fp16/bf16 compute on Ampere or newer; flex unless attention dropout."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(attention, "backend_unavailable_reason", lambda name: None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert resolve_backend("auto", cuda, torch.bfloat16, 0.0) == "flash_attn"
    assert resolve_backend("auto", cuda, torch.float32, 0.0) == "flex"
    assert resolve_backend("auto", cuda, torch.float32, 0.1) == "sdpa"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert resolve_backend("auto", cuda, torch.bfloat16, 0.0) == "flex"


def test_named_backend_is_never_replaced():
    for name in ATTENTION_BACKENDS:
        assert resolve_backend(name, torch.device("cpu"), torch.float32, 0.0) == name


def test_flash_attn_on_cpu_tensors_is_a_clear_error():
    if backend_unavailable_reason("flash_attn") is not None:
        pytest.skip("flash-attn is not installed here")
    query, key, value = random_qkv(sum(DOCUMENTS))
    with pytest.raises(ConfigError, match=r"flash_attn.*CUDA"):
        ATTENTION_BACKENDS["flash_attn"](query, key, value, varlen_batch(DOCUMENTS), 0.0)


# --- On a GPU: bf16 agreement with the float32 reference -------------------------------------

GPU_BACKENDS = ["sdpa", "flex", "flash_attn"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_bf16_backend_on_gpu_matches_float32_eager(tiny_config, backend):
    if (reason := backend_unavailable_reason(backend)) is not None:
        pytest.skip(reason)
    reference = MosaicBertForMaskedLM(tiny_config(**GPU_SIZES)).cuda()
    model = MosaicBertForMaskedLM(tiny_config(attention_backend=backend, **GPU_SIZES)).cuda()
    model.load_state_dict(reference.state_dict())
    ids, mask = make_ids([128, 77, 3, 128, 64, 100, 90, 128], 128)
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, torch.full_like(ids, -100))
    labels[mask == 0] = -100
    ids, mask, labels = ids.cuda(), mask.cuda(), labels.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(ids, mask, labels=labels)
    ref = reference(ids, mask, labels=labels)
    torch.testing.assert_close(out.logits.float(), ref.logits, rtol=0.05, atol=0.05)
    assert abs(out.loss.item() - ref.loss.item()) < 0.02
    out.loss.backward()
    ref.loss.backward()
    grad = model.bert.encoder.layer[0].attention.Wqkv.weight.grad.float()
    grad_ref = reference.bert.encoder.layer[0].attention.Wqkv.weight.grad
    cosine = torch.nn.functional.cosine_similarity(grad.flatten(), grad_ref.flatten(), dim=0)
    assert cosine > 0.99


def fake_flash_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
    block_table=None,
):
    """flash-attn 2's signature and input contract, computed the slow way on CPU. Its ALiBi,
    without causal masking, is `-slope * |i + seqlen_k - seqlen_q - j|`."""
    assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32
    assert alibi_slopes.dtype == torch.float32 and alibi_slopes.shape == (q.shape[1],)
    assert not causal and dropout_p == 0.0
    assert max_seqlen_q == int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
    lengths = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).tolist()
    outputs, start = [], 0
    for length in lengths:
        qd, kd, vd = (t[start : start + length].transpose(0, 1).float() for t in (q, k, v))
        i = torch.arange(length)
        bias = -alibi_slopes[:, None, None] * (i[:, None] - i[None, :]).abs()
        scale = softmax_scale or q.shape[-1] ** -0.5
        scores = qd @ kd.transpose(-1, -2) * scale + bias
        outputs.append((scores.softmax(-1) @ vd).transpose(0, 1).to(q.dtype))
        start += length
    return torch.cat(outputs)


def test_flash_attn_backend_calls_the_kernel_correctly(monkeypatch, tiny_config):
    """Without a GPU: a stand-in flash_attn module checks our arguments and computes the
    kernel's documented result, which must match eager."""
    import sys
    import types

    fake = types.ModuleType("flash_attn")
    fake.flash_attn_varlen_func = fake_flash_attn_varlen_func
    monkeypatch.setitem(sys.modules, "flash_attn", fake)
    monkeypatch.setattr(attention, "_check_flash_inputs", lambda query: None)
    attention._flash_attn_import_error.cache_clear()
    try:
        reference = MosaicBertModel(tiny_config()).eval()
        model = MosaicBertModel(tiny_config(attention_backend="flash_attn")).eval()
        model.load_state_dict(reference.state_dict())
        ids, mask = make_ids([20, 7, 13], 24)
        mask[0, 9:20] = 2
        with torch.no_grad():
            torch.testing.assert_close(
                model(ids, mask).last_hidden_state,
                reference(ids, mask).last_hidden_state,
                rtol=1e-5,
                atol=1e-5,
            )
    finally:
        attention._flash_attn_import_error.cache_clear()
