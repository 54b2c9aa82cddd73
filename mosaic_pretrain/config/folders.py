"""The folders a recipe names, and the locks runs take on them.

Free of Composer and torch, so the command line can tell a user that another live run holds
the folder before it spends seconds importing the training stack."""

from pathlib import Path

from mosaic_pretrain.config.schema import FolderLockSection, PretrainConfig
from mosaic_pretrain.folder_lock import FolderLock, LockRules


def expand_folder(template: str, config: PretrainConfig) -> Path:
    """A folder from the recipe, with its `{run_name}` filled in."""
    return Path(template.format(run_name=config.run_name))


def run_folder(config: PretrainConfig) -> Path:
    """Where the run's own files go: the checkpoint folder, else runs/RUN_NAME."""
    return expand_folder(config.save_folder or "runs/{run_name}", config)


def lock_rules(section: FolderLockSection) -> LockRules:
    """A recipe's `folder_lock` section as the lock's rules (a bad timeout: a ConfigError)."""
    return LockRules(section.other_host_timeout_minutes, section.take_over)


def run_folder_lock(config: PretrainConfig) -> FolderLock:
    """The lock the run takes on its folder (not taken yet)."""
    folder = run_folder(config)
    if config.save_folder is None:
        what, instead = f"run folder {folder}", "choose another run_name or a save_folder"
    else:
        what, instead = f"save_folder {folder}", "choose another save_folder"
    return FolderLock(folder, what, instead, lock_rules(config.folder_lock))


def ablation_output_folder(config: PretrainConfig) -> Path:
    """Where an ablation writes its runs and its report."""
    return expand_folder(config.ablation.output_folder, config)


def ablation_output_lock(config: PretrainConfig) -> FolderLock:
    """An ablation's lock on its output folder (not taken yet)."""
    folder = ablation_output_folder(config)
    what, instead = f"ablation.output_folder {folder}", "choose another ablation.output_folder"
    return FolderLock(folder, what, instead, lock_rules(config.folder_lock))


def recipe_folder_lock(config: PretrainConfig) -> FolderLock:
    """The lock the recipe's own command takes: `ablate`'s on its output folder for an ablation
    recipe, else `train`'s on the run folder (not taken yet)."""
    return ablation_output_lock(config) if config.ablation is not None else run_folder_lock(config)
