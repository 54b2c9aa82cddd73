"""The Hugging Face BERT baseline of the same size, for side-by-side comparisons.

MosaicBERT's `intermediate_size` is the width of each GeGLU half, so at equal sizes it has more
feed-forward parameters than BERT (137M vs 110M at Base size); the baseline keeps BERT's own
design, which is the comparison the MosaicBERT paper makes.
"""

from transformers import BertConfig, BertForMaskedLM

from mosaic_pretrain.model.configuration import MosaicBertConfig

# Learned absolute positions: BERT's published table size.
BERT_MAX_POSITIONS = 512


def hf_bert_config_like(config: MosaicBertConfig, attn_implementation: str = "sdpa") -> BertConfig:
    """A `BertConfig` with our sizes, vocabulary and dropouts, using the given attention kernel."""
    return BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=BERT_MAX_POSITIONS,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        initializer_range=config.initializer_range,
        attn_implementation=attn_implementation,
    )


def hf_bert_for_masked_lm(config: MosaicBertConfig, attn_implementation: str = "sdpa"):
    """A freshly initialised `transformers.BertForMaskedLM` matching `config` (SDPA attention)."""
    return BertForMaskedLM(hf_bert_config_like(config, attn_implementation))
