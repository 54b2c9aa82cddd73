"""Resuming checks: the recipe a run continues with against the one in its checkpoint.

Keys fall in three groups. Operational keys (where to save, how often to log, how long to run,
batch split per device, data location, compilation, the attention backend, ...) may change
freely. Everything that defines the function the model computes can never change: its sizes,
feed-forward activation, low-precision LayerNorm and the tokenizer (the weights and the data
would no longer fit, or the same weights would mean another network). The attention backend is
operational: every backend computes the same function within dtype tolerance and owns no
weights, so a run may move to a machine with flash-attn (or without it). So are the weights a
run started from (`model.init_from`): a resumed run takes its weights from the checkpoint. Every
other key (the optimizer, schedule, seed, batch size, masking, sequence length, ...) changes the
run it continues, so a change must be asked for by name in `resume_allow_changes` (e.g. a new
learning rate: `resume_allow_changes=[optimizer.lr]`).
"""

import logging
import re
from pathlib import Path

from omegaconf import OmegaConf

from mosaic_pretrain.config import PretrainConfig
from mosaic_pretrain.config.compare import differing_keys, flatten
from mosaic_pretrain.errors import CheckpointError, ConfigError
from mosaic_pretrain.train.checkpoints import latest_link
from mosaic_pretrain.train.safe_load import load_checkpoint

logger = logging.getLogger(__name__)

RECORD = "RunRecord"
FREE = (
    "run_name", "autoresume", "load_path", "save_folder", "save_interval",
    "save_num_checkpoints_to_keep", "save_overwrite", "export_folder", "export_with_code",
    "progress_bar", "folder_lock",
    "log_to_console", "console_log_interval", "callbacks", "loggers", "eval_interval",
    "eval_subset_num_batches", "ablation",
    "device_eval_batch_size", "device_train_microbatch_size", "max_duration", "data_local",
    "data_remote", "train_loader.dataset.local", "train_loader.dataset.remote",
    "train_loader.num_workers", "eval_loader", "compile", "loss_guard", "resume_allow_changes",
    "model.model_config.attention_backend", "model.init_from", "model.use_pretrained",
    "model.init_optimizer_state", "scheduler.keep_stable_checkpoint",
)  # fmt: skip
NEVER = (
    "model", "tokenizer_name", "train_loader.dataset.tokenizer_name", "algorithms",
)  # fmt: skip


# A stream's data may move (its local folder or remote) as a single dataset's may.
FREE_PATTERN = re.compile(r"(train_loader|eval_loader)\.dataset\.streams\.[^.]+\.(local|remote)")


def recipe_record(config: PretrainConfig) -> dict:
    """The resolved recipe as plain data (enums as their values), as stored in checkpoints."""
    return OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True)


def _under(key: str, prefixes) -> bool:
    return any(key == prefix or key.startswith(f"{prefix}.") for prefix in prefixes)


def checkpoint_to_resume(config: PretrainConfig, folder: Path) -> Path | None:
    if config.autoresume:
        link = latest_link(folder)
        if link.exists():
            return link
    if config.load_path and "://" not in config.load_path:
        return Path(config.load_path)
    return None


def read_checkpoint_state(checkpoint: Path) -> dict:
    """A checkpoint's saved state, read by the safe loader with its tensors memory-mapped (only
    the small pickled part is read), or a one-line error when it is missing, unreadable or
    refused."""
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist; fix load_path")
    return load_checkpoint(checkpoint)


def run_record(state: dict) -> dict | None:
    """The RunRecord in a checkpoint's state (None for one written before records existed)."""
    return state.get("state", {}).get("callbacks", {}).get(RECORD)


def read_record(checkpoint: Path) -> dict | None:
    return run_record(read_checkpoint_state(checkpoint))


def _with_new_defaults(recipe: dict) -> dict:
    """A checkpoint's recipe with the keys added to the schema since it was written filled in
    with their defaults: a newer version of the code, run as before, changes nothing."""
    defaults = flatten(
        OmegaConf.to_container(OmegaConf.structured(PretrainConfig), enum_to_str=True)
    )
    old = flatten(recipe)
    added = {key: value for key, value in defaults.items() if not _present(key, old)}
    return {**old, **added}


def _present(key: str, flat: dict) -> bool:
    """Whether `key`, a parent of it or a child of it is in the flattened record."""
    parents = key.split(".")
    if any(".".join(parents[:depth]) in flat for depth in range(1, len(parents) + 1)):
        return True
    return any(other.startswith(f"{key}.") for other in flat)


def check_resume(config: PretrainConfig, checkpoint: Path, record: dict | None) -> None:
    """Refuse to continue `checkpoint` (whose RunRecord is `record`) with a recipe that changes
    what it cannot, or what the recipe did not name in `resume_allow_changes`."""
    if record is None:
        logger.warning("%s carries no recipe record; its recipe cannot be compared", checkpoint)
        return
    old_recipe = _with_new_defaults(record["recipe"])
    changed = [key for key in differing_keys(old_recipe, recipe_record(config))
               if not _under(key, FREE) and not FREE_PATTERN.fullmatch(key)]  # fmt: skip
    never = [key for key in changed if _under(key, NEVER)]
    if never:
        raise ConfigError(
            f"cannot resume {checkpoint} with a different {', '.join(never)}: the weights or "
            "data would not fit; start a new run (load_path + a new save_folder) instead"
        )
    unasked = [key for key in changed if not _under(key, config.resume_allow_changes)]
    if "max_seq_len" in unasked:
        raise ConfigError(
            f"resuming {checkpoint} with max_seq_len {old_recipe.get('max_seq_len')} -> "
            f"{config.max_seq_len}: a longer context is a new phase, not a resume; set "
            f"model.init_from={checkpoint} (optionally model.init_optimizer_state=true), a new "
            "save_folder and run_name, and no load_path/autoresume of that run"
        )
    if unasked:
        raise ConfigError(
            f"resuming {checkpoint} with a recipe that changes {', '.join(unasked)} "
            f"(checkpoint made by {record.get('code_version', '?')}); set "
            f"resume_allow_changes=[{','.join(unasked)}] if that is intended"
        )
    if changed:
        logger.warning("resuming with changed %s, as resume_allow_changes allows", changed)
