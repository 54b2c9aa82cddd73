"""MosaicBERT: a BERT encoder with ALiBi, GeGLU (or another feed-forward activation), unpadding
and a sparse MLM head.

Reads top to bottom: helpers, embeddings, attention, feed-forward, layer, encoder, then the
models users load (`MosaicBertModel`, `...ForMaskedLM`, `...ForSequenceClassification`).
Shapes in comments: B batch, S padded sequence length, T real tokens in the batch (T <= B*S),
H hidden size, N heads, D head size, I intermediate size, V vocabulary, M masked tokens.

Pure torch + transformers: no training-framework import, so transformers code can use it.
"""

import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    SequenceClassifierOutput,
)

from mosaic_pretrain.model.activations import FFN_ACTIVATIONS, Activation
from mosaic_pretrain.model.alibi import alibi_slopes
from mosaic_pretrain.model.attention import (
    ATTENTION_BACKENDS,
    ATTENTION_PREPARATION,
    AUTO,
    VarlenBatch,
    check_backend_name,
    resolve_backend,
)
from mosaic_pretrain.model.configuration import MosaicBertConfig
from mosaic_pretrain.model.mlm_loss import masked_lm_loss
from mosaic_pretrain.model.padding import BatchLayout, gather_tokens, scatter_tokens

logger = logging.getLogger(__name__)


class LowPrecisionLayerNorm(nn.LayerNorm):
    """LayerNorm that stays in the autocast dtype (bf16) instead of upcasting to float32.

    Autocast runs layer_norm in float32, which doubles its memory traffic; MosaicBERT showed bf16
    LayerNorm trains just as well. Outside autocast this is an ordinary LayerNorm.
    """

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        device_type = hidden.device.type
        if not torch.is_autocast_enabled(device_type):
            return super().forward(hidden)
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return F.layer_norm(
                hidden.to(dtype),
                self.normalized_shape,
                self.weight.to(dtype),
                self.bias.to(dtype),
                self.eps,
            )


def make_layer_norm(config: MosaicBertConfig) -> nn.LayerNorm:
    layer_norm_class = LowPrecisionLayerNorm if config.low_precision_layernorm else nn.LayerNorm
    return layer_norm_class(config.hidden_size, eps=config.layer_norm_eps)


class MosaicBertEmbeddings(nn.Module):
    """Word + token-type embeddings. No position embeddings: ALiBi carries position."""

    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = make_layer_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        # (T,) ids -> (T, H): embedded after unpadding, so padding is never looked up.
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


class MosaicBertAttention(nn.Module):
    """Multi-head self-attention over unpadded tokens, then residual and post-LayerNorm."""

    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout_p = config.attention_probs_dropout_prob
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.LayerNorm = make_layer_norm(config)

    def forward(self, hidden: torch.Tensor, batch: VarlenBatch, backend: str) -> torch.Tensor:
        total = hidden.shape[0]
        qkv = self.Wqkv(hidden).view(total, 3, self.num_heads, self.head_dim)  # (T, 3, N, D)
        query, key, value = qkv.unbind(dim=1)
        dropout_p = self.dropout_p if self.training else 0.0
        context = ATTENTION_BACKENDS[backend](query, key, value, batch, dropout_p)  # (T, N, D)
        attended = self.output(context.reshape(total, -1))
        return self.LayerNorm(hidden + self.dropout(attended))


class MosaicBertMLP(nn.Module):
    """Feed-forward block, residual, LayerNorm; the activation is `config.ffn_activation`.

    GLU (default GeGLU, Shazeer 2020): `W_o dropout(act(x W_g) * x W_v)`. Gate and value come
    from one matmul of width 2*I (faster than two of width I) with no bias, as in MosaicBERT.
    Plain MLP (BERT): `W_o dropout(act(x W_i + b))`. I is `config.feed_forward_width`.
    """

    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.gated = FFN_ACTIVATIONS[config.ffn_activation].gated
        self.width = config.feed_forward_width
        if self.gated:
            self.gated_layers = nn.Linear(config.hidden_size, 2 * self.width, bias=False)
        else:
            self.wi = nn.Linear(config.hidden_size, self.width)
        self.act = Activation(config.ffn_activation)
        self.wo = nn.Linear(self.width, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.LayerNorm = make_layer_norm(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.gated:
            gate, value = self.gated_layers(hidden).split(self.width, dim=-1)  # (T, I) x2
            inner = self.act(gate) * value
        else:
            inner = self.act(self.wi(hidden))  # (T, I)
        out = self.wo(self.dropout(inner))  # (T, H)
        return self.LayerNorm(hidden + out)


class MosaicBertLayer(nn.Module):
    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.attention = MosaicBertAttention(config)
        self.mlp = MosaicBertMLP(config)

    def forward(self, hidden: torch.Tensor, batch: VarlenBatch, backend: str) -> torch.Tensor:
        return self.mlp(self.attention(hidden, batch, backend))


class MosaicBertEncoder(nn.Module):
    """The layer stack, plus what all layers share: ALiBi slopes and the backend choice."""

    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        check_backend_name(config.attention_backend)
        self.attention_backend = config.attention_backend
        self.attention_dropout = config.attention_probs_dropout_prob
        self.num_heads = config.num_attention_heads
        self.layer = nn.ModuleList(MosaicBertLayer(config) for _ in range(config.num_hidden_layers))
        # A plain attribute, not a buffer: derived from the head count, so never checkpointed
        # and never broadcast by DDP. It follows the module to its device (`_apply`) and stays
        # float32 (flash-attn needs float32 slopes), so the forward reads it as it is: no cache
        # filled on first use, which a compiled graph would guard on and recompile once.
        self.alibi_slopes = alibi_slopes(self.num_heads, device="cpu")  # (N,) float32
        self.last_backend: str | None = None

    def _apply(self, fn, recurse: bool = True):
        """`.to()`, `.cuda()`, `.half()`, ...: the slopes move with the module's tensors, but are
        recomputed in float32 on the new device instead of being cast."""
        module = super()._apply(fn, recurse)
        device = fn(self.alibi_slopes).device
        self.alibi_slopes = alibi_slopes(self.num_heads, device=device)
        return module

    def _backend_for(self, hidden: torch.Tensor) -> str:
        backend = self.attention_backend
        if backend == AUTO:
            device = hidden.device
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else hidden.dtype
            backend = resolve_backend(backend, device, dtype, self.attention_dropout)
        if torch.compiler.is_compiling():
            # Logging would break the graph, and reading `last_backend` would recompile the graph
            # once it changes: compiled, the backend is neither logged nor recorded.
            return backend
        if backend != self.last_backend:
            logger.info(
                "MosaicBERT attention: %s backend on %s (attention_backend=%r)",
                backend,
                hidden.device.type,
                self.attention_backend,
            )
        self.last_backend = backend
        return backend

    def forward(
        self,
        hidden: torch.Tensor,
        cu_seqlens: torch.Tensor,
        max_seqlen: int,
        keep_all_layers: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(T, H) -> (T, H), and each layer's input and the final output when asked."""
        # `.to` is a no-op once the module is on hidden's device (`_apply` moved the slopes).
        slopes = self.alibi_slopes.to(hidden.device)
        batch = VarlenBatch(cu_seqlens, max_seqlen, slopes, hidden.shape[0])
        backend = self._backend_for(hidden)
        if backend in ATTENTION_PREPARATION:
            ATTENTION_PREPARATION[backend](batch)
        all_layers = [hidden] if keep_all_layers else []
        for layer in self.layer:
            hidden = layer(hidden, batch, backend)
            if keep_all_layers:
                all_layers.append(hidden)
        return hidden, all_layers


class MosaicBertPooler(nn.Module):
    """BERT's pooler: dense + tanh over each row's first real token ([CLS])."""

    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, first_tokens: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(first_tokens))


class MosaicBertPredictionHead(nn.Module):
    """MLM head: dense, GELU, LayerNorm, then the decoder tied to the word embeddings."""

    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = nn.GELU(approximate="none")
        self.LayerNorm = make_layer_norm(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(self.act(self.dense(hidden))))


@dataclass
class UnpaddedEncoding:
    """The encoder's output before repadding, for heads that need only some tokens."""

    hidden: torch.Tensor  # (T, H)
    indices: torch.Tensor  # (T,) positions in the flattened (B*S) batch
    batch_size: int
    seqlen: int
    all_layers: list[torch.Tensor]  # (T, H) each, when hidden states were asked for

    def repad(self, tokens: torch.Tensor) -> torch.Tensor:
        return scatter_tokens(tokens, self.indices, self.batch_size, self.seqlen)


@dataclass
class MosaicBertMaskedLMOutput(MaskedLMOutput):
    """`MaskedLMOutput` plus where the sparse logits come from.

    With `labels`, `logits` is `(M, V)`: one row per masked token (label != -100), in row-major
    order, so it lines up with `labels[labels != -100]`; `masked_token_indices` gives each row's
    position in the flattened `(batch * seq)` input. Without labels, `logits` is `(B, S, V)`.
    """

    masked_token_indices: torch.LongTensor | None = None


class MosaicBertPreTrainedModel(PreTrainedModel):
    config_class = MosaicBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = False
    _no_split_modules = ("MosaicBertLayer",)

    def __init__(self, config: MosaicBertConfig, *args, **kwargs):
        # Again here: `from_pretrained(path, key=value)` sets overrides after the config was built.
        config.validate()
        super().__init__(config, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's init: normal(0, initializer_range) weights, zero biases, unit LayerNorms."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, Activation) and module.gate_range is not None:
            nn.init.zeros_(module.gate_range)  # start from the unexpanded function

    def _as_requested(self, output, return_dict: bool | None):
        """A ModelOutput, or a tuple when `return_dict=False` (or the config says so)."""
        use_dict = self.config.use_return_dict if return_dict is None else return_dict
        return output if use_dict else output.to_tuple()


def _check_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq), got {tuple(input_ids.shape)}")
    if attention_mask is None:
        return torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids shape "
            f"{tuple(input_ids.shape)}"
        )
    return attention_mask


class MosaicBertModel(MosaicBertPreTrainedModel):
    """The bare encoder. `last_hidden_state` is padded back to (B, S, H), zeros at padding."""

    def __init__(self, config: MosaicBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = MosaicBertEmbeddings(config)
        self.encoder = MosaicBertEncoder(config)
        self.pooler = MosaicBertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    @property
    def attention_backend_in_use(self) -> str | None:
        """The concrete backend the last forward ran (useful when configured as `auto`)."""
        return self.encoder.last_backend

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        layout: BatchLayout | None = None,
    ) -> UnpaddedEncoding:
        """Run embeddings and encoder on the real tokens only; heads pick what they need.

        `layout` is `BatchLayout.of(attention_mask)` worked out ahead (on the host), which
        spares the step its host-device syncs; without it, it is worked out here.
        """
        attention_mask = _check_inputs(input_ids, attention_mask)
        batch_size, seqlen = input_ids.shape
        if layout is None:
            layout = BatchLayout.of(attention_mask)
        indices = layout.indices
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden = self.embeddings(
            gather_tokens(input_ids, indices), gather_tokens(token_type_ids, indices)
        )  # (T, H)
        hidden, all_layers = self.encoder(
            hidden, layout.cu_seqlens, layout.max_seqlen, output_hidden_states
        )
        return UnpaddedEncoding(hidden, indices, batch_size, seqlen, all_layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        layout: BatchLayout | None = None,
        **unused,
    ) -> BaseModelOutputWithPooling | tuple:
        _refuse_unsupported(output_attentions, unused)
        encoding = self.encode(
            input_ids, attention_mask, token_type_ids, bool(output_hidden_states), layout
        )
        sequence_output = encoding.repad(encoding.hidden)  # (B, S, H)
        pooled_output = None
        if self.pooler is not None:
            pooled_output = self.pooler(_first_real_tokens(sequence_output, attention_mask))
        hidden_states = None
        if output_hidden_states:
            hidden_states = tuple(encoding.repad(layer) for layer in encoding.all_layers)
        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=hidden_states,
        )
        return self._as_requested(output, return_dict)


def _refuse_unsupported(output_attentions: bool | None, unused: dict) -> None:
    """Arguments BERT takes that we cannot honour: an error, never silently ignored."""
    if output_attentions:
        raise ValueError(
            "MosaicBERT cannot return attention probabilities: its fused attention kernels never "
            "materialize them"
        )
    given = sorted(name for name, value in unused.items() if value is not None)
    if given:
        raise ValueError(
            f"MosaicBERT does not take {', '.join(given)} (no position ids with ALiBi; inputs "
            "are token ids)"
        )


def _first_real_tokens(sequence_output: torch.Tensor, attention_mask: torch.Tensor | None):
    """(B, S, H) -> (B, H): each row's first non-padding token, so left padding works too."""
    if attention_mask is None:
        return sequence_output[:, 0]
    first = (attention_mask != 0).int().argmax(dim=1)  # (B,)
    return sequence_output[torch.arange(sequence_output.shape[0]), first]


class MosaicBertForMaskedLM(MosaicBertPreTrainedModel):
    """MLM with the prediction head run only on masked tokens when labels are given.

    The head's decoder (H x V) is the most expensive matmul per token; with 30% masking the
    sparse head does it for 30% of the tokens.
    """

    _tied_weights_keys = ("head.decoder.weight",)

    def __init__(self, config: MosaicBertConfig):
        super().__init__(config)
        self.bert = MosaicBertModel(config, add_pooling_layer=False)
        self.head = MosaicBertPredictionHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.head.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        layout: BatchLayout | None = None,
        **unused,
    ) -> MosaicBertMaskedLMOutput | tuple:
        """`layout`: `BatchLayout.of(attention_mask, labels)` worked out ahead, on the host."""
        _refuse_unsupported(output_attentions, unused)
        if layout is None or (labels is not None and layout.masked is None):
            layout = BatchLayout.of(_check_inputs(input_ids, attention_mask), labels)
        encoding = self.bert.encode(
            input_ids, attention_mask, token_type_ids, bool(output_hidden_states), layout
        )
        loss = masked_token_indices = None
        if labels is None:
            logits = encoding.repad(self.head(encoding.hidden))  # (B, S, V)
        else:
            token_labels = gather_tokens(labels, encoding.indices)  # (T,)
            masked = layout.masked  # (M,) positions among the T real tokens
            logits = self.head(encoding.hidden.index_select(0, masked))  # (M, V)
            loss = masked_lm_loss(logits, token_labels.index_select(0, masked))
            masked_token_indices = encoding.indices.index_select(0, masked)
        hidden_states = None
        if output_hidden_states:
            hidden_states = tuple(encoding.repad(layer) for layer in encoding.all_layers)
        output = MosaicBertMaskedLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=hidden_states,
            masked_token_indices=masked_token_indices,
        )
        return self._as_requested(output, return_dict)


class MosaicBertForSequenceClassification(MosaicBertPreTrainedModel):
    """Pooled [CLS] -> dropout -> linear. `num_labels=1` is regression (MSE), as in transformers."""

    def __init__(self, config: MosaicBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = MosaicBertModel(config, add_pooling_layer=True)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **unused,
    ) -> SequenceClassifierOutput | tuple:
        encoded = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **unused,
        )
        logits = self.classifier(self.dropout(encoded.pooler_output))  # (B, num_labels)
        loss = None if labels is None else self._loss(logits, labels)
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=encoded.hidden_states
        )
        return self._as_requested(output, return_dict)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """transformers' problem types: regression, single-label or multi-label classification."""
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif not labels.is_floating_point():
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        logits = logits.float()
        if self.config.problem_type == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.view(-1), labels.float().view(-1))
            return F.mse_loss(logits, labels.float())
        if self.config.problem_type == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.long().view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.float())
