"""Recipes: the typed schema (`schema.py`) and loading with overrides and checks (`load.py`)."""

from mosaic_pretrain.config.load import load_config, to_yaml
from mosaic_pretrain.config.schema import PretrainConfig

__all__ = ["PretrainConfig", "load_config", "to_yaml"]
