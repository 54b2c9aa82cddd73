import pytest

from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.model import (
    MosaicBertConfig,
    MosaicBertForMaskedLM,
    MosaicBertModel,
    hf_bert_for_masked_lm,
    round_vocab_size,
)
from mosaic_pretrain.model.attention import backend_unavailable_reason


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_mlm_parameters(vocab, hidden, layers, intermediate, type_vocab=2) -> int:
    """MosaicBERT's parameter count written out layer by layer (decoder weight is tied)."""
    layer_norm = 2 * hidden
    embeddings = vocab * hidden + type_vocab * hidden + layer_norm
    attention = (hidden * 3 * hidden + 3 * hidden) + (hidden * hidden + hidden) + layer_norm
    glu = hidden * 2 * intermediate + (intermediate * hidden + hidden) + layer_norm
    head = (hidden * hidden + hidden) + layer_norm + vocab  # decoder bias only
    return embeddings + layers * (attention + glu) + head


def test_vocab_is_rounded_to_a_multiple_of_64():
    assert round_vocab_size(30522) == 30528
    assert round_vocab_size(64) == 64
    assert round_vocab_size(65) == 128
    assert MosaicBertConfig().vocab_size == 30528


@pytest.mark.parametrize(
    ("preset", "hidden", "layers", "intermediate", "published"),
    [("base", 768, 12, 3072, 137_400_384), ("large", 1024, 24, 4096, 435_221_312)],
)
def test_preset_parameter_counts(preset, hidden, layers, intermediate, published):
    model = MosaicBertForMaskedLM(MosaicBertConfig.from_preset(preset))
    count = count_parameters(model)
    assert count == expected_mlm_parameters(30528, hidden, layers, intermediate)
    assert count == published  # the number stated in the README


def test_hf_baseline_has_the_same_shape(tiny_config):
    config = tiny_config()
    baseline = hf_bert_for_masked_lm(config)
    assert baseline.config.hidden_size == 32 and baseline.config.num_hidden_layers == 2
    assert baseline.config.vocab_size == 128
    assert baseline.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(hidden_size=100, num_attention_heads=12), "hidden_size=100 is not divisible by"),
        (
            dict(attention_backend="flash"),
            "attention_backend='flash' is unknown; choose one of "
            "eager, sdpa, flex, flash_attn, auto",
        ),
        (
            dict(attention_backend="flex", attention_probs_dropout_prob=0.1),
            "attention_backend='flex' has no attention dropout",
        ),
        (dict(hidden_size="768"), "hidden_size must be a positive integer, got '768'"),
        (dict(num_hidden_layers=0), "num_hidden_layers must be a positive integer"),
        (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob must be a probability"),
        (dict(pad_token_id=40000), "pad_token_id=40000 is outside the vocabulary"),
        (dict(low_precision_layernorm="yes"), "low_precision_layernorm must be true or false"),
    ],
)
def test_bad_configs_name_the_field(overrides, message):
    with pytest.raises(ConfigError) as error:
        MosaicBertConfig(**overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as error:
        MosaicBertConfig(num_hidden_layers=-1, attention_backend="nope", layer_norm_eps=0)
    for field in ("num_hidden_layers", "attention_backend", "layer_norm_eps"):
        assert field in str(error.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown model preset 'huge'; choose one of base"):
        MosaicBertConfig.from_preset("huge")


@pytest.mark.skipif(
    backend_unavailable_reason("flash_attn") is None, reason="flash-attn is installed here"
)
def test_flash_attn_without_the_package_fails_when_the_model_is_built(tiny_config):
    config = tiny_config(attention_backend="flash_attn")  # a config alone is fine to load
    with pytest.raises(
        ConfigError, match=r"attention_backend='flash_attn' cannot run: .*flash-attn"
    ):
        MosaicBertModel(config)
