"""`MosaicBertConfig`: BERT's field names where they apply, plus MosaicBERT's own.

Validated on construction: every problem found is reported at once, each naming its field, as a
`ConfigError`. Whether an installed kernel can run (flash-attn present, a GPU) is checked when a
model is built, not here, so a config saved on a GPU machine still loads on a CPU-only one.
"""

import math

from transformers import PretrainedConfig

from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.model.activations import FFN_ACTIVATION_CHOICES, feed_forward_width
from mosaic_pretrain.model.attention import ATTENTION_BACKEND_CHOICES

# Tensor cores work on tiles of 64 (bf16 on A100/H100); an embedding matrix whose row count is a
# multiple of 64 keeps the MLM decoder matmul on fast paths (30522 -> 30528).
VOCAB_MULTIPLE = 64


def round_vocab_size(tokenizer_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """The model's vocabulary size for a tokenizer: its size rounded up to a multiple of 64."""
    if tokenizer_size < 1:
        raise ConfigError(f"tokenizer size must be positive, got {tokenizer_size}")
    return math.ceil(tokenizer_size / multiple) * multiple


BERT_UNCASED_VOCAB = 30522

# The published model sizes. `intermediate_size` is the width of each half of the GeGLU, as in
# MosaicBERT, so the gated layer projects hidden -> 2 * intermediate (unless `ffn_param_matched`).
PRESETS: dict[str, dict[str, int]] = {
    "base": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
    "large": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),
    # Not a published size: small enough to train for a few minutes on a laptop CPU.
    "mini": dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    ),
}


class MosaicBertConfig(PretrainedConfig):
    """Configuration of a MosaicBERT encoder.

    Args (BERT's meaning unless noted):
        vocab_size: embedding rows; `round_vocab_size(len(tokenizer))` for speed.
        hidden_size, num_hidden_layers, num_attention_heads: the usual transformer shape.
        intermediate_size: width of the feed-forward: of a plain MLP, or of each half (gate and
            value) of a GLU, unless `ffn_param_matched` scales a GLU to 2/3 of it.
        hidden_dropout_prob: dropout after embeddings, attention output and feed-forward.
        attention_probs_dropout_prob: dropout on attention probabilities. MosaicBERT trains with
            0.0; `flex` supports only 0.0.
        type_vocab_size: number of token types (segments).
        layer_norm_eps: LayerNorm epsilon.
        pad_token_id: id of the padding token (its embedding row starts at zero).
        initializer_range: standard deviation of the normal weight init.
        alibi_starting_size: kept so MosaicBERT configs load unchanged (it sized MosaicBERT's
            precomputed ALiBi table). Here the bias is computed for each batch's own length, so
            this bounds nothing and any positive value behaves the same.
        attention_backend (ours): `eager | sdpa | flex | flash_attn | auto`, see `attention.py`.
        low_precision_layernorm (ours): run LayerNorm in the autocast dtype (bf16) instead of
            float32, which saves memory traffic; MosaicBERT's recipe.
        ffn_activation (ours): the feed-forward variant, one of `activations.FFN_ACTIVATIONS`:
            `geglu` (MosaicBERT), `gelu` (BERT's plain MLP), `swiglu`, `reglu`, `bilinear`, the
            expanded-range `xgelu`, `xsilu`, `xatlu` and their GLUs `xgeglu`, `xswiglu`, `xatglu`.
        ffn_param_matched (ours): give GLUs 2/3 of `intermediate_size` (rounded to 64) per half,
            so they have about the parameters of a plain MLP of `intermediate_size`.
        classifier_dropout: dropout before the sequence classification layer; defaults to
            `hidden_dropout_prob`.
    """

    model_type = "mosaic_bert"

    def __init__(
        self,
        vocab_size: int = round_vocab_size(BERT_UNCASED_VOCAB),
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.0,
        type_vocab_size: int = 2,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        initializer_range: float = 0.02,
        alibi_starting_size: int = 512,
        attention_backend: str = "auto",
        low_precision_layernorm: bool = True,
        ffn_activation: str = "geglu",
        ffn_param_matched: bool = False,
        classifier_dropout: float | None = None,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.alibi_starting_size = alibi_starting_size
        self.attention_backend = attention_backend
        self.low_precision_layernorm = low_precision_layernorm
        self.ffn_activation = ffn_activation
        self.ffn_param_matched = ffn_param_matched
        self.classifier_dropout = classifier_dropout
        self.validate()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MosaicBertConfig":
        """MosaicBERT-`base`, `-large` (or the CPU-sized `mini`), with any field overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def feed_forward_width(self) -> int:
        """The activation's input width (each half's, for a GLU)."""
        return feed_forward_width(
            self.intermediate_size, self.ffn_activation, self.ffn_param_matched
        )

    def validate(self) -> None:
        """Raise one ConfigError listing every invalid field."""
        problems = [*self._type_problems()]
        if not problems:
            problems += self._consistency_problems()
        if problems:
            raise ConfigError("MosaicBertConfig: " + "; ".join(problems))

    def _type_problems(self) -> list[str]:
        problems = []
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "type_vocab_size",
            "alibi_starting_size",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < 1.0:
                problems.append(f"{name} must be a probability in [0, 1), got {value!r}")
        if self.classifier_dropout is not None and (
            not _is_number(self.classifier_dropout) or not 0.0 <= self.classifier_dropout < 1.0
        ):
            problems.append(
                f"classifier_dropout must be null or in [0, 1), got {self.classifier_dropout!r}"
            )
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                problems.append(f"{name} must be a positive number, got {value!r}")
        for name in ("low_precision_layernorm", "ffn_param_matched"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                problems.append(f"{name} must be true or false, got {value!r}")
        if self.ffn_activation not in FFN_ACTIVATION_CHOICES:
            problems.append(
                f"ffn_activation={self.ffn_activation!r} is unknown; choose one of "
                f"{', '.join(FFN_ACTIVATION_CHOICES)}"
            )
        if self.attention_backend not in ATTENTION_BACKEND_CHOICES:
            problems.append(
                f"attention_backend={self.attention_backend!r} is unknown; choose one of "
                f"{', '.join(ATTENTION_BACKEND_CHOICES)}"
            )
        return problems

    def _consistency_problems(self) -> list[str]:
        problems = []
        if self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            problems.append(
                f"pad_token_id={self.pad_token_id} is outside the vocabulary "
                f"(vocab_size={self.vocab_size})"
            )
        if self.attention_backend == "flex" and self.attention_probs_dropout_prob > 0:
            problems.append(
                "attention_backend='flex' has no attention dropout but "
                f"attention_probs_dropout_prob={self.attention_probs_dropout_prob}: set it to 0.0 "
                "or choose another backend"
            )
        return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
