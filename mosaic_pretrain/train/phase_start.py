"""A new phase of an earlier run: `model.init_from` naming one of its Composer checkpoints, or
its save folder (then its latest checkpoint).

A phase is a new run, not a resume: the step count, schedule, duration, batch size, sequence
length and data are the recipe's own (a context extension is a longer `max_seq_len`); only the
weights come from the checkpoint and, with `model.init_optimizer_state`, the optimizer's state
(Adam's moments and step counts; the learning rate, betas and weight decay stay the recipe's).
The checkpoint carries its run's recipe (the RunRecord), so the recipe's model is checked
against the one that was trained, as for an exported directory. The earlier run's folder is
only read: the phase's own files must go elsewhere.
"""

import logging
from pathlib import Path

import torch
from composer.utils import dist
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from mosaic_pretrain.config.schema import ModelSection
from mosaic_pretrain.data.tokenizer import load_tokenizer, tokenizer_fingerprint
from mosaic_pretrain.errors import CheckpointError, ConfigError, MosaicPretrainError, first_line
from mosaic_pretrain.train.checkpoints import folder_checkpoint, is_complete
from mosaic_pretrain.train.init_weights import KEY, function_differences, size_hint
from mosaic_pretrain.train.model_sizes import model_config
from mosaic_pretrain.train.resume import read_checkpoint_state, run_record
from mosaic_pretrain.train.safe_load import composer_weights

logger = logging.getLogger(__name__)

OPTIMIZER_KEY = "model.init_optimizer_state"
OPTIMIZER = "DecoupledAdamW"  # the optimizer builders.build_optimizer makes


def checkpoint_source(section: ModelSection) -> Path | None:
    """The checkpoint `init_from` names (a file, or a save folder's latest or newest complete
    one); None when it names a model directory or hub name."""
    if section.init_from is None:
        return None
    path = Path(section.init_from).expanduser()
    if path.is_file():
        return path
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    return folder_checkpoint(path)


def pin_checkpoint(section: ModelSection) -> None:
    """Point init_from at the one checkpoint its save folder names now, the same on every rank
    (rank 0's choice): a run still saving there moves its `latest` link and rotates files, and
    the weights, the optimizer state and every rank must all come from one file. The resolved
    recipe then records which checkpoint the phase started from."""
    checkpoint = checkpoint_source(section)
    if checkpoint is None:
        return
    chosen = [str(checkpoint)]
    dist.broadcast_object_list(chosen, src=0)
    if chosen[0] != section.init_from:
        logger.info("%s=%s: the phase starts from %s", KEY, section.init_from, chosen[0])
    section.init_from = chosen[0]


def _source_model(state: dict, checkpoint: Path) -> tuple[ModelSection, str, bool]:
    """The model section, tokenizer name and low-precision LayerNorm of the run that wrote it."""
    if not isinstance(state.get("state"), dict) or "model" not in state["state"]:
        raise CheckpointError(
            f"{KEY}={checkpoint} is not a Composer checkpoint of a mosaic-pretrain run; for a "
            f"model's saved weights set {KEY} to its directory (with config.json)"
        )
    record = run_record(state)
    if record is None:
        raise CheckpointError(
            f"{KEY}={checkpoint} carries no recipe record (written by an older version), so "
            f"its model cannot be checked; export it (`mosaic-pretrain export {checkpoint} DIR "
            f"--recipe RECIPE`) and set {KEY}=DIR"
        )
    recipe = record["recipe"]
    try:
        section = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(ModelSection), recipe.get("model", {}))
        )
    except OmegaConfBaseException as error:
        raise CheckpointError(
            f"{KEY}={checkpoint}: its recipe record cannot be read ({first_line(error)}); "
            "export it and start from the export"
        ) from None
    tokenizer = section.tokenizer_name or recipe.get("tokenizer_name", "bert-base-uncased")
    low_precision = (recipe.get("algorithms") or {}).get("fused_layernorm") is not None
    return section, tokenizer, low_precision


def _tokenizer_problem(name: str, tokenizer: PreTrainedTokenizerBase, source: Path) -> str | None:
    if name == tokenizer.name_or_path:
        return None
    try:
        trained_with = load_tokenizer(name)
    except MosaicPretrainError as error:
        return (
            f"{KEY}={source}: the tokenizer it was trained with ({name}) cannot be loaded ({error})"
        )
    if tokenizer_fingerprint(trained_with) == tokenizer_fingerprint(tokenizer):
        return None
    return (
        f"{KEY}={source} was trained with tokenizer {name!r}, not the recipe's "
        f"{tokenizer.name_or_path!r}: its token ids would mean other words; set "
        f"tokenizer_name={name}"
    )


def phase_problems(
    section: ModelSection, recipe: PretrainedConfig, tokenizer: PreTrainedTokenizerBase
) -> list[str]:
    """Why the checkpoint init_from names cannot start this recipe's model (empty: it can)."""
    source = Path(section.init_from).expanduser()
    checkpoint = checkpoint_source(section)
    if checkpoint is None:
        return [
            f"{KEY}={section.init_from} holds neither a model (config.json) nor a checkpoint "
            "(latest-rank0.pt, ep*-ba*-rank0.pt); name a run's save_folder, one of its "
            "checkpoints, or a directory written by mosaic-pretrain export or import"
        ]
    if not is_complete(checkpoint):
        return [
            f"{KEY}={checkpoint} is truncated or not a Composer checkpoint (no complete "
            "archive); use another checkpoint of that run, or an exported model directory"
        ]
    try:
        state = read_checkpoint_state(checkpoint)
        source_section, tokenizer_name, low_precision = _source_model(state, checkpoint)
    except MosaicPretrainError as error:
        return error.problems
    optimizers = state["state"].get("optimizers") or {}
    if section.init_optimizer_state and OPTIMIZER not in optimizers:
        return [
            f"{OPTIMIZER_KEY}: {checkpoint} holds no {OPTIMIZER} state (it has "
            f"{sorted(optimizers) or 'none'}); set {OPTIMIZER_KEY}=false"
        ]
    if source_section.name is not section.name:
        return [
            f"{KEY}={source} is a {source_section.name.value} run's checkpoint; set "
            f"model.name={source_section.name.value} to continue it"
        ]
    problems = []
    tokenizer_problem = _tokenizer_problem(tokenizer_name, tokenizer, checkpoint)
    if tokenizer_problem is not None:
        return [tokenizer_problem]
    trained = model_config(source_section, tokenizer, low_precision, filled_by_checkpoint=True)
    differing = function_differences(trained, recipe, section.name)
    if differing:
        problems.append(
            f"{KEY}={source} holds another model than the recipe's: {', '.join(differing)}; "
            f"{size_hint(trained, differing, section)}"
        )
    return problems


def load_phase_model(
    model_class, config: PretrainedConfig, section: ModelSection, tokenizer
) -> torch.nn.Module:
    """A `model_class` of the recipe's `config` holding the checkpoint's weights, all of them."""
    problems = phase_problems(section, config, tokenizer)
    if problems:
        raise ConfigError("; ".join(problems), problems)
    checkpoint = checkpoint_source(section)
    model = model_class(config)
    weights = composer_weights(read_checkpoint_state(checkpoint), checkpoint)
    expected = set(model.state_dict())
    missing, unused = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unused:
        raise CheckpointError(
            f"{KEY}={checkpoint}: its weights do not fill the recipe's model (missing "
            f"{missing[:3]}, unused {unused[:3]})"
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{KEY}={checkpoint}: {first_line(error)}") from None
    logger.info("a new phase from the weights of %s", checkpoint)
    return model


def load_phase_optimizer_state(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, section: ModelSection
) -> None:
    """Put the checkpoint's per-parameter optimizer state into `optimizer` (built over the
    ComposerModel `model`), keeping the recipe's hyperparameters: Composer keys a checkpoint's
    optimizer state by parameter name."""
    checkpoint = checkpoint_source(section)
    if checkpoint is None:
        raise ConfigError(
            f"{OPTIMIZER_KEY} needs {KEY} to be an earlier run's checkpoint or save_folder; "
            f"{section.init_from} holds weights only"
        )
    state = read_checkpoint_state(checkpoint)
    saved_optimizers = state["state"].get("optimizers") or {}
    name = type(optimizer).__name__
    if name not in saved_optimizers:
        raise CheckpointError(
            f"{OPTIMIZER_KEY}: {checkpoint} holds no {name} state (it has "
            f"{sorted(saved_optimizers) or 'none'}); set {OPTIMIZER_KEY}=false"
        )
    saved = saved_optimizers[name]["state"]
    parameters = dict(model.named_parameters())
    trained = {key for key, parameter in parameters.items() if parameter.requires_grad}
    unknown, absent = sorted(set(saved) - set(parameters)), sorted(trained - set(saved))
    if unknown or absent:
        raise CheckpointError(
            f"{OPTIMIZER_KEY}: the optimizer state of {checkpoint} does not fit the model "
            f"(unknown {unknown[:3]}, absent {absent[:3]})"
        )
    for key, entry in saved.items():
        parameter = parameters[key]
        for field, value in entry.items():
            if torch.is_tensor(value) and value.shape not in (torch.Size([]), parameter.shape):
                raise CheckpointError(
                    f"{OPTIMIZER_KEY}: {key}'s {field} in {checkpoint} has shape "
                    f"{tuple(value.shape)}, the parameter {tuple(parameter.shape)}"
                )
        optimizer.state[parameter] = {
            field: value.clone() if torch.is_tensor(value) else value
            for field, value in entry.items()
        }
    logger.info("optimizer state of %s taken for %d parameters", checkpoint, len(saved))
