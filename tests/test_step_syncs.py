"""A training step with its BatchLayout worked out ahead: same numbers, no host-device syncs, and
one graph under torch.compile.

On the CPU a sync cannot be observed directly, so the ops that cause one on a GPU are: reading a
tensor's value on the host (`aten._local_scalar_dense`, behind `.item()`, `int()`, `bool()`) and
the ops whose output shape depends on tensor values (`nonzero`, boolean-mask indexing,
`masked_select`, `repeat_interleave` without `output_size`). A dispatch mode records every op the
step runs; none of those may appear. On a GPU, CUDA's own sync detector checks the same.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mosaic_pretrain.model import MosaicBertForMaskedLM
from mosaic_pretrain.model.padding import BatchLayout, unpad_input
from mosaic_pretrain.train.composer_model import MLMComposerModel
from mosaic_pretrain.train.microbatches import LAYOUT, with_layout
from tests.conftest import CPU_BACKENDS, make_ids, packed_mlm_batch

SYNCING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2"}


class OpRecorder(TorchDispatchMode):
    """Names the ops run under it that would make a GPU step wait for the device."""

    def __init__(self):
        super().__init__()
        self.syncing: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in SYNCING_OPS:
            self.syncing.append(name)
        elif name == "repeat_interleave" and kwargs.get("output_size") is None:
            self.syncing.append("repeat_interleave without output_size")
        elif name in ("index", "index_put", "index_put_") and any(
            isinstance(index, torch.Tensor) and index.dtype == torch.bool
            for index in (args[1] if len(args) > 1 else [])
        ):
            self.syncing.append(f"{name} with a boolean mask")
        return func(*args, **kwargs)


def test_layout_is_unpad_input_plus_the_masked_tokens():
    batch = packed_mlm_batch()
    layout = BatchLayout.of(batch["attention_mask"], batch["labels"])
    indices, cu_seqlens, max_seqlen = unpad_input(batch["attention_mask"])
    assert torch.equal(layout.indices, indices) and torch.equal(layout.cu_seqlens, cu_seqlens)
    assert layout.max_seqlen == max_seqlen and layout.total_tokens == len(indices)
    token_labels = batch["labels"].flatten()[indices]
    assert torch.equal(layout.masked, torch.nonzero(token_labels != -100).flatten())


def step(model: MLMComposerModel, batch: dict):
    outputs = model(batch)
    loss = model.loss(outputs, batch)
    loss.backward()
    for metric in model.get_metrics(is_train=True).values():
        model.update_metric(batch, outputs, metric)
    return outputs, loss


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_layout_given_ahead_changes_no_number(tiny_config, backend):
    torch.manual_seed(0)
    ahead = MLMComposerModel(MosaicBertForMaskedLM(tiny_config(attention_backend=backend)))
    inline = MLMComposerModel(MosaicBertForMaskedLM(tiny_config(attention_backend=backend)))
    inline.load_state_dict(ahead.state_dict())
    batch = packed_mlm_batch()
    outputs, loss = step(ahead, with_layout(batch))
    expected_outputs, expected_loss = step(inline, batch)
    assert torch.equal(loss, expected_loss)
    assert torch.equal(outputs.logits, expected_outputs.logits)
    assert torch.equal(outputs.masked_token_indices, expected_outputs.masked_token_indices)
    for (name, param), expected in zip(ahead.named_parameters(), inline.parameters(), strict=True):
        assert torch.equal(param.grad, expected.grad), name
    accuracy = ahead.get_metrics(is_train=True)["MaskedAccuracy"]
    assert accuracy.compute() == inline.get_metrics(is_train=True)["MaskedAccuracy"].compute()


# flex's kernel is a higher-order op, which a dispatch mode cannot look into: the GPU test
# (tests/test_gpu_step.py) and the compile test cover it.
@pytest.mark.parametrize("backend", [name for name in CPU_BACKENDS if name != "flex"])
def test_the_step_runs_no_op_that_would_sync_a_gpu(tiny_config, backend):
    model = MLMComposerModel(MosaicBertForMaskedLM(tiny_config(attention_backend=backend)))
    batch = with_layout(packed_mlm_batch())
    with OpRecorder() as ahead:
        step(model, batch)
    assert ahead.syncing == []
    # The recorder does see them when the model has to find the tokens itself.
    del batch[LAYOUT]
    with OpRecorder() as inline:
        step(model, batch)
    assert "nonzero" in inline.syncing and "_local_scalar_dense" in inline.syncing


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_compiled_step_with_its_layout_is_one_graph(tiny_config, backend):
    model = MosaicBertForMaskedLM(tiny_config(attention_backend=backend)).train()
    batch = packed_mlm_batch()
    inputs = {name: batch[name] for name in ("input_ids", "attention_mask", "labels")}
    layout = BatchLayout.of(batch["attention_mask"], batch["labels"])
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(**inputs, layout=layout)
    reasons = [str(reason.reason) for reason in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons  # flex's block mask is traced too
    torch._dynamo.reset()
    unaided = torch._dynamo.explain(model)(**inputs)
    assert unaided.graph_break_count > explained.graph_break_count


def varied_batches(count: int, seqlen: int = 32):
    """MLM batches whose token count, masked count and longest document all change."""
    generator = torch.Generator().manual_seed(0)
    for number in range(count):
        lengths = torch.randint(2, seqlen + 1, (4,), generator=generator).tolist()
        ids, mask = make_ids(lengths, seqlen, seed=number)
        chosen = (torch.rand(ids.shape, generator=generator) < 0.3) & mask.bool()
        yield ids, mask, torch.where(chosen, ids, torch.full_like(ids, -100))


@pytest.mark.slow
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_compiled_training_matches_eager_and_stops_recompiling(tiny_config, backend):
    """aot_eager traces forward and backward as inductor would, without generating code."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = MosaicBertForMaskedLM(tiny_config(attention_backend=backend)).train()
    reference = MosaicBertForMaskedLM(tiny_config(attention_backend=backend)).train()
    reference.load_state_dict(model.state_dict())
    compiled = torch.compile(model, backend="aot_eager")
    graphs_after_warmup = None
    for number, (ids, mask, labels) in enumerate(varied_batches(6)):
        if number == 3:
            graphs_after_warmup = counters["stats"]["unique_graphs"]
        layout = BatchLayout.of(mask, labels)
        out = compiled(input_ids=ids, attention_mask=mask, labels=labels, layout=layout)
        expected = reference(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        expected.loss.backward()
        torch.testing.assert_close(out.loss, expected.loss, rtol=1e-6, atol=1e-6)
        for param, expected_param in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(param.grad, expected_param.grad, rtol=1e-5, atol=1e-6)
    # Sizes become dynamic after the first change: later batches reuse the graphs.
    assert counters["stats"]["unique_graphs"] == graphs_after_warmup
    torch._dynamo.reset()


def test_moving_a_layout_traces_without_a_graph_break():
    layout = BatchLayout.of(packed_mlm_batch()["attention_mask"], packed_mlm_batch()["labels"])
    torch._dynamo.reset()
    explained = torch._dynamo.explain(lambda moved: moved.to("cpu").indices + 1)(layout)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    torch._dynamo.reset()


def collated_long_batch(bert_tokenizer, max_seq_len: int) -> dict:
    """A batch as the training loader makes it at a long length: documents of many lengths
    (some cut at max_seq_len, some short) packed several to a row by the real collator."""
    from mosaic_pretrain.data.collator import MLMCollator, Sample

    generator = torch.Generator().manual_seed(max_seq_len)
    lengths = [max_seq_len, max_seq_len // 2, 40, 7, max_seq_len - 3, 90, 12, 300]
    samples = [
        Sample(
            torch.randint(1000, 2000, (min(length, max_seq_len),), generator=generator).numpy(), i
        )
        for i, length in enumerate(lengths)
    ]
    collator = MLMCollator(bert_tokenizer, 0.3, max_seq_len, seed=0, packing=True)
    batch = collator(samples)
    assert len(batch["input_ids"]) < len(samples)  # rows really are shared
    return batch


@pytest.mark.parametrize("max_seq_len", [512, 1024])
def test_a_packed_long_context_step_runs_no_op_that_would_sync_a_gpu(
    tiny_config, bert_tokenizer, max_seq_len
):
    model = MLMComposerModel(
        MosaicBertForMaskedLM(tiny_config(attention_backend="sdpa", vocab_size=30528))
    )
    batch = with_layout(collated_long_batch(bert_tokenizer, max_seq_len))
    with OpRecorder() as recorder:
        step(model, batch)
    assert recorder.syncing == []
