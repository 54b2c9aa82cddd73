"""What `train` refuses, found before compute is spent: the training checks
(`mosaic_pretrain.train.check`) and those of GLUE during pretraining. `mosaic-pretrain check`
(cli.py) adds an ablation recipe's values."""

from mosaic_pretrain.config import PretrainConfig
from mosaic_pretrain.glue.pretraining_points import glue_sweep_problems
from mosaic_pretrain.train.check import check_recipe as training_problems


def check_recipe(config: PretrainConfig, verify_hashes: bool = False) -> list[str]:
    """Problems of a loaded recipe that `train` would stop on (empty when it is ready)."""
    return training_problems(config, verify_hashes) + glue_sweep_problems(config)
