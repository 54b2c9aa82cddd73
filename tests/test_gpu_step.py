"""On a GPU: a training step with its layout worked out on the host runs without one host-device
sync, for every backend (CUDA's own sync detector, `torch.cuda.set_sync_debug_mode("error")`).

Composer is imported only for the train-time metric: this file is collected, and the model's
step tested, on a machine whose torch is newer than Composer allows (the GPU check's case).
"""

import pytest
import torch

from mosaic_pretrain.model import MosaicBertForMaskedLM
from mosaic_pretrain.model.attention import backend_unavailable_reason
from mosaic_pretrain.model.padding import BatchLayout
from tests.conftest import GPU_SIZES, packed_mlm_batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def train_time_metric():
    """The Trainer's masked accuracy, when Composer imports with this torch."""
    try:
        from mosaic_pretrain.train.composer_model import MaskedAccuracy
    except Exception:  # Composer refuses this torch: the model's step is still tested
        return None
    return MaskedAccuracy().cuda()


def cuda_step(model, inputs: dict, layout: BatchLayout, metric) -> None:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        outputs = model(**inputs, layout=layout)
    outputs.loss.backward()
    if metric is not None:
        labels = inputs["labels"].flatten().index_select(0, outputs.masked_token_indices)
        metric.update(outputs.logits, labels)


@pytest.mark.parametrize("backend", ["sdpa", "flex", "flash_attn"])
def test_cuda_step_does_not_synchronize(tiny_config, backend):
    if (reason := backend_unavailable_reason(backend)) is not None:
        pytest.skip(reason)
    model = MosaicBertForMaskedLM(tiny_config(attention_backend=backend, **GPU_SIZES)).cuda()
    host = packed_mlm_batch()
    host_layout = BatchLayout.of(host["attention_mask"], host["labels"]).pin_memory()
    inputs = {name: host[name].cuda() for name in MODEL_INPUTS}
    metric = train_time_metric()
    # Warm-up: first-call work (kernel loading, flex's compile, caches) may sync.
    cuda_step(model, inputs, host_layout.to("cuda", non_blocking=True), metric)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:  # the copy of the layout is part of the step, as in the Trainer's microbatch transform
        cuda_step(model, inputs, host_layout.to("cuda", non_blocking=True), metric)
    finally:
        torch.cuda.set_sync_debug_mode("default")
