"""mosaic_pretrain: fast, config-driven pretraining of BERT-style encoders (MosaicBERT recipe)."""

__version__ = "0.1.0"
