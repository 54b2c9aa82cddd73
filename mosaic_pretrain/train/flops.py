"""FLOPs a training step must do, for MFU: the work on real tokens only.

Per real token and layer, the matmuls cost 2 FLOPs per weight: attention projections 4H^2
(QKV and output), feed-forward 6HI for a GLU such as MosaicBERT's GeGLU (H -> 2I, then I -> H)
or 4HI for a plain MLP such as BERT's, I being the activation's width. Attention scores and
their weighted sum cost 4H per pair of tokens in the same document (sum of L^2 over documents).
The MLM head runs on masked tokens only: 2H^2 (transform) + 2HV (decoder). Backward costs twice
the forward, so a step is 3x the forward. Embedding lookups, LayerNorms, activations and
softmax are left out, as is usual for MFU.
"""

import torch

from mosaic_pretrain.model.activations import FFN_ACTIVATIONS
from mosaic_pretrain.model.padding import unpad_input


def forward_flops(
    hidden: int,
    intermediate: int,
    layers: int,
    vocab: int,
    gated: bool,
    document_lengths: torch.Tensor,
    masked_tokens: int,
) -> int:
    tokens = int(document_lengths.sum())
    feed_forward = (6 if gated else 4) * hidden * intermediate
    per_token_per_layer = 2 * 4 * hidden * hidden + feed_forward
    attention_per_layer = 4 * hidden * int((document_lengths.long() ** 2).sum())
    head = masked_tokens * (2 * hidden * hidden + 2 * hidden * vocab)
    return layers * (tokens * per_token_per_layer + attention_per_layer) + head


def feed_forward_shape(config) -> tuple[int, bool]:
    """(activation width, is a GLU) of a MosaicBERT config or of transformers' BertConfig."""
    activation = getattr(config, "ffn_activation", None)
    if activation is None:  # transformers' BERT: a plain GELU MLP
        return config.intermediate_size, False
    return config.feed_forward_width, FFN_ACTIVATIONS[activation].gated


def training_flops(config, batch: dict) -> int:
    """FLOPs of forward + backward for `batch` (a collated MLM batch) on a model of `config`."""
    _, cu_seqlens, _ = unpad_input(batch["attention_mask"])
    masked = int((batch["labels"] != -100).sum())
    width, gated = feed_forward_shape(config)
    return 3 * forward_flops(
        config.hidden_size,
        width,
        config.num_hidden_layers,
        config.vocab_size,
        gated,
        cu_seqlens[1:] - cu_seqlens[:-1],
        masked,
    )
