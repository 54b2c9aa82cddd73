"""The config of the model a recipe trains: MosaicBERT's preset and overrides, or the baseline
BERT's, sized as the recipe's published names and legacy keys say."""

import logging
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from mosaic_pretrain.config.schema import ModelName, ModelSection
from mosaic_pretrain.data.tokenizer import model_config_for
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.model import MosaicBertConfig, hf_bert_config_like

logger = logging.getLogger(__name__)

# Published recipes name a hub BERT as `pretrained_model_name` to take its sizes from.
BERT_SIZES = {
    "bert-base-uncased": "base",
    "bert-base-cased": "base",
    "bert-large-uncased": "large",
    "bert-large-cased": "large",
}


def _model_directory(section: ModelSection) -> Path | None:
    """pretrained_model_name as a directory holding a model (not a tokenizer, not the weights
    init_from already names): before init_from existed such a recipe took the model's sizes
    and weights from it."""
    source = section.pretrained_model_name
    if source is None or source in (section.init_from, section.tokenizer_name):
        return None
    if section.use_pretrained or source in BERT_SIZES:
        return None
    path = Path(source)
    return path if (path / "config.json").is_file() else None


def _preset(section: ModelSection) -> str:
    """The size preset: a published BERT named as pretrained_model_name selects its own."""
    source = section.pretrained_model_name
    if source is None:
        return section.model_config.preset
    if source in BERT_SIZES:
        return BERT_SIZES[source]
    if section.use_pretrained:  # the weights' own name: the recipe's sizes are checked on them
        return section.model_config.preset
    if _model_directory(section) is not None:
        raise ConfigError(
            f"model.pretrained_model_name={source} holds a model, but the key selects the "
            f"sizes of a published BERT only; to start from its weights set "
            f"model.init_from={source}"
        )
    if Path(source).is_dir():
        return section.model_config.preset  # a tokenizer directory (recipes set it so)
    raise ConfigError(
        f"model.pretrained_model_name={source!r} is neither a local directory nor one of "
        f"{', '.join(BERT_SIZES)} (whose sizes it selects)"
    )


def model_config(
    section: ModelSection,
    tokenizer: PreTrainedTokenizerBase,
    low_precision_ln: bool,
    filled_by_checkpoint: bool = False,
):
    """The config of the model the recipe trains: MosaicBERT's, or the baseline BERT's.

    A checkpoint of a run whose recipe named a model directory as pretrained_model_name (before
    init_from) holds a model of that directory's config, which it keeps for its export and
    resume."""
    overrides = section.model_config.overrides()
    if low_precision_ln:
        overrides.setdefault("low_precision_layernorm", True)
    legacy = _model_directory(section) if filled_by_checkpoint else None
    if legacy is not None and section.name is ModelName.mosaic_bert:
        logger.warning(
            "model sized by model.pretrained_model_name=%s (as before init_from)", legacy
        )
        return MosaicBertConfig.from_pretrained(legacy, **overrides)
    config = model_config_for(tokenizer, _preset(section), **overrides)
    return hf_bert_config_like(config) if section.name is ModelName.hf_bert else config
