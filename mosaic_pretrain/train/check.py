"""`mosaic-pretrain check RECIPE`: every problem that would stop a run, found before compute is
spent, one per line. `train` runs the same checks first.

Covered: the recipe (YAML, keys, types, cross-key rules); the precision and attention backend can
run on this machine's device (the Trainer's: the GPU when torch sees one, else the CPU); the
tokenizer loads and its vocabulary fits the model; the weights of `model.init_from` hold the
recipe's model; each loader's local data (index readable, shards present at their recorded
sizes, pre-tokenized with this tokenizer; with `--verify-hashes` also every shard's contents
against the index's hashes); the save folder is writable and holds no other run's
checkpoints; the export folder is free; the checkpoint a run would continue (`autoresume` or
`load_path`) is complete, readable by the safe loader, of this model and compatible with this
recipe. `mosaic_pretrain.commands.check` adds the GLUE sweep of `callbacks.glue_sweep`, and the
command line an ablation's values.
"""

import os
from pathlib import Path

import torch

from mosaic_pretrain.config import PretrainConfig
from mosaic_pretrain.config.schema import LoaderSection, ModelName, Precision
from mosaic_pretrain.data.convert import MANIFEST
from mosaic_pretrain.data.dataset import INDEX, check_local_split, check_tokenizer_matches
from mosaic_pretrain.data.shard_hashes import verify_split
from mosaic_pretrain.data.tokenizer import model_vocab_size
from mosaic_pretrain.errors import Problems
from mosaic_pretrain.train.checkpoints import is_complete
from mosaic_pretrain.train.resume import (
    check_resume,
    checkpoint_to_resume,
    read_checkpoint_state,
    run_record,
)


def check_recipe(config: PretrainConfig, verify_hashes: bool = False) -> list[str]:
    """Problems of a loaded recipe; `verify_hashes` also reads every local shard and compares it
    with its index's hash (slow; by default shards are checked by size)."""
    from mosaic_pretrain.config.folders import run_folder
    from mosaic_pretrain.train.builders import build_tokenizer

    problems = Problems()
    for problem in device_problems(config):
        problems.add(problem)
    tokenizer = problems.attempt(build_tokenizer, config)
    checkpoint = checkpoint_to_resume(config, run_folder(config))
    if tokenizer is not None:
        _check_vocabulary(config, tokenizer, problems)
        _check_whole_words(config, tokenizer, problems)
        if checkpoint is None:  # a resumed run's weights come from its checkpoint
            problems.attempt(_check_initial_weights, config, tokenizer, problems)
        for name in ("train_loader", "eval_loader"):
            loader = getattr(config, name)
            if loader is not None:
                _check_data(name, loader, tokenizer, problems, verify_hashes)
    if config.save_folder is not None:
        _check_writable(run_folder(config), "save_folder", problems)
    _check_folders(config, problems)
    if checkpoint is not None:
        _check_checkpoint(config, checkpoint, tokenizer, problems)
    return problems.found


# bf16 arithmetic and FlashAttention-2 need an Ampere GPU (compute capability 8.0) or newer.
AMPERE = (8, 0)
HALF_PRECISIONS = (Precision.amp_bf16, Precision.amp_fp16)


def device_problems(config: PretrainConfig) -> list[str]:
    """Precision and attention backend against the device the Trainer will pick (the GPU when
    torch sees one, else the CPU), one line each: Composer's own refusal is a traceback."""
    problems = []
    precision = config.precision
    on_gpu = torch.cuda.is_available()
    if not on_gpu and precision is not Precision.fp32:
        problems.append(
            f"precision={precision.value} needs a CUDA GPU and torch sees none (on the CPU, "
            "Composer trains in fp32 only); set precision=fp32"
        )
    capability = torch.cuda.get_device_capability() if on_gpu else None
    if on_gpu and precision is Precision.amp_bf16 and capability < AMPERE:
        problems.append(
            f"precision=amp_bf16: {torch.cuda.get_device_name()} (compute capability "
            f"{capability[0]}.{capability[1]}) has no bf16; set precision=amp_fp16"
        )
    if _attention_backend(config) == "flash_attn":
        if not on_gpu:
            problems.append(
                "model.model_config.attention_backend=flash_attn needs a CUDA GPU and torch "
                "sees none; choose sdpa (or auto)"
            )
        elif precision not in HALF_PRECISIONS:
            problems.append(
                f"model.model_config.attention_backend=flash_attn needs precision amp_bf16 or "
                f"amp_fp16 (its kernels take half precision only), not {precision.value}"
            )
        elif capability < AMPERE:
            problems.append(
                f"model.model_config.attention_backend=flash_attn needs compute capability 8.0 "
                f"or newer; {torch.cuda.get_device_name()} has {capability[0]}.{capability[1]}; "
                "choose sdpa (or auto)"
            )
    return problems


def _attention_backend(config: PretrainConfig) -> str | None:
    """The backend the recipe names (a run started from weights uses the recipe's too)."""
    if config.model.name is not ModelName.mosaic_bert:
        return None
    return config.model.model_config.attention_backend


def _check_vocabulary(config: PretrainConfig, tokenizer, problems: Problems) -> None:
    vocab = config.model.model_config.vocab_size
    if vocab is not None and vocab < len(tokenizer):
        problems.add(
            f"model.model_config.vocab_size={vocab} is smaller than tokenizer "
            f"{tokenizer.name_or_path!r} ({len(tokenizer)} tokens); remove the key to size it "
            f"from the tokenizer ({model_vocab_size(tokenizer)})"
        )


def _check_whole_words(config: PretrainConfig, tokenizer, problems: Problems) -> None:
    """Whole-word masking, where a loader asks for it, can find the tokenizer's words."""
    from mosaic_pretrain.data.tokenizer import word_starts

    for loader in (config.train_loader, config.eval_loader):
        if loader is None:
            continue
        asked = loader.dataset.mlm_whole_word
        if config.mlm_whole_word if asked is None else asked:
            problems.attempt(word_starts, tokenizer)
            return


def _check_initial_weights(config: PretrainConfig, tokenizer, problems: Problems) -> None:
    """The weights of model.init_from (or use_pretrained) fit the recipe's model."""
    from mosaic_pretrain.train.init_weights import init_problems
    from mosaic_pretrain.train.model_sizes import model_config
    from mosaic_pretrain.train.phase_start import checkpoint_source, phase_problems

    low_precision = config.algorithms.fused_layernorm is not None
    recipe_model = model_config(config.model, tokenizer, low_precision)
    if checkpoint_source(config.model) is not None:  # a new phase of an earlier run
        found = phase_problems(config.model, recipe_model, tokenizer)
    else:
        found = init_problems(config.model, recipe_model, tokenizer)
        if not found and config.model.init_optimizer_state and config.model.init_from:
            found.append(
                f"model.init_optimizer_state takes an earlier run's optimizer state from its "
                f"checkpoint; model.init_from={config.model.init_from} holds weights only: set "
                "init_from to the run's save_folder or checkpoint, or init_optimizer_state=false"
            )
    for problem in found:
        problems.add(problem)


def _check_data(
    name: str, loader: LoaderSection, tokenizer, problems: Problems, verify_hashes: bool
) -> None:
    from mosaic_pretrain.train.builders import data_sources

    dataset = loader.dataset
    for source in data_sources(dataset):
        if source.remote is not None:
            continue  # fetched at run time; the index is checked once downloaded
        if dataset.convert_builtin_corpus and not (Path(source.local) / MANIFEST).exists():
            continue  # converted on first use
        split_root = problems.attempt(check_local_split, source.local, source.split)
        if split_root is not None:
            problems.attempt(check_tokenizer_matches, split_root / INDEX, tokenizer)
            if verify_hashes:
                problems.attempt(verify_split, split_root, INDEX)


def _check_writable(folder: Path, key: str, problems: Problems) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problems.add(f"{key} {folder} cannot be created: {existing} is a file; choose another")
    elif not os.access(existing, os.W_OK | os.X_OK):
        problems.add(f"{key} {folder} is not writable ({existing} denies it); choose another")


def _check_folders(config: PretrainConfig, problems: Problems) -> None:
    from mosaic_pretrain.train.folders import check_save_folder, free_export_folder

    problems.attempt(check_save_folder, config)
    problems.attempt(free_export_folder, config)
    for problem in _phase_folder_problems(config):
        problems.add(problem)


def _phase_folder_problems(config: PretrainConfig) -> list[str]:
    """A new phase (init_from a run's checkpoint) writes none of its files into that run's
    folder, which it only reads."""
    from mosaic_pretrain.callbacks.stable_checkpoint import STABLE_FOLDER
    from mosaic_pretrain.config.folders import expand_folder, run_folder
    from mosaic_pretrain.train.phase_start import checkpoint_source

    checkpoint = checkpoint_source(config.model)
    if checkpoint is None:
        return []
    earlier = checkpoint.resolve().parent
    if earlier.name == STABLE_FOLDER:  # a WSD run's kept checkpoint: the run's folder is above
        earlier = earlier.parent
    own = {"save_folder": run_folder(config)}
    if config.export_folder is not None:
        own["export_folder"] = expand_folder(config.export_folder, config)
    return [
        f"{key} {folder} is in {earlier}, the folder of the run model.init_from continues, "
        f"which a new phase only reads; set {key} (and run_name) to new ones"
        for key, folder in own.items()
        if folder.resolve() == earlier or earlier in folder.resolve().parents
    ]


def _check_checkpoint(
    config: PretrainConfig, checkpoint: Path, tokenizer, problems: Problems
) -> None:
    # autoresume takes the save folder's latest checkpoint when there is one, else load_path.
    from_load_path = config.load_path is not None and checkpoint == Path(config.load_path)
    key = "load_path" if from_load_path else "autoresume"
    if not checkpoint.is_file():
        problems.add(f"{key}: checkpoint {checkpoint} does not exist")
        return
    if not is_complete(checkpoint):
        problems.add(
            f"{key}: checkpoint {checkpoint} is truncated or not a checkpoint (no complete "
            "archive); use an earlier checkpoint of the run"
        )
        return
    state = problems.attempt(read_checkpoint_state, checkpoint)  # read once for both checks
    if state is None:
        return
    problems.attempt(check_resume, config, checkpoint, run_record(state))
    if problems.found or tokenizer is None:
        return
    problems.attempt(_check_checkpoint_model, config, checkpoint, key, state, tokenizer)


def _check_checkpoint_model(
    config: PretrainConfig, checkpoint: Path, key: str, state: dict, tokenizer
) -> None:
    """Its weights have the names and shapes of this recipe's model (also for checkpoints
    written before they carried their recipe)."""
    from mosaic_pretrain.errors import CheckpointError
    from mosaic_pretrain.train.builders import build_model
    from mosaic_pretrain.train.safe_load import COMPOSER_MODEL_PREFIX

    saved = {
        name.removeprefix(COMPOSER_MODEL_PREFIX): tuple(tensor.shape)
        for name, tensor in state["state"]["model"].items()
    }
    model = build_model(
        config.model, tokenizer, config.algorithms.fused_layernorm is not None, False
    )
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    differing = sorted(
        name for name in set(saved) | set(expected) if saved.get(name) != expected.get(name)
    )
    if differing:
        raise CheckpointError(
            f"{key}: checkpoint {checkpoint} is of another model than the recipe's "
            f"({len(differing)} weights differ in name or shape, e.g. {differing[0]}: "
            f"{saved.get(differing[0])} vs {expected.get(differing[0])})"
        )
