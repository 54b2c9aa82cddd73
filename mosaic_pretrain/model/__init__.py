"""The MosaicBERT model: pure torch + transformers, usable without the training framework.

Importing this package registers the classes with transformers' Auto classes, so
`AutoModelForMaskedLM.from_pretrained(saved_dir)` loads a saved MosaicBERT directory.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
)

from mosaic_pretrain.model.attention import ATTENTION_BACKEND_CHOICES, ATTENTION_BACKENDS
from mosaic_pretrain.model.configuration import PRESETS, MosaicBertConfig, round_vocab_size
from mosaic_pretrain.model.hf_baseline import hf_bert_config_like, hf_bert_for_masked_lm
from mosaic_pretrain.model.modeling import (
    MosaicBertForMaskedLM,
    MosaicBertForSequenceClassification,
    MosaicBertMaskedLMOutput,
    MosaicBertModel,
)
from mosaic_pretrain.model.padding import BatchLayout

AutoConfig.register(MosaicBertConfig.model_type, MosaicBertConfig, exist_ok=True)
AutoModel.register(MosaicBertConfig, MosaicBertModel, exist_ok=True)
AutoModelForMaskedLM.register(MosaicBertConfig, MosaicBertForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(
    MosaicBertConfig, MosaicBertForSequenceClassification, exist_ok=True
)

__all__ = [
    "ATTENTION_BACKENDS",
    "ATTENTION_BACKEND_CHOICES",
    "PRESETS",
    "BatchLayout",
    "MosaicBertConfig",
    "MosaicBertForMaskedLM",
    "MosaicBertForSequenceClassification",
    "MosaicBertMaskedLMOutput",
    "MosaicBertModel",
    "hf_bert_config_like",
    "hf_bert_for_masked_lm",
    "round_vocab_size",
]
