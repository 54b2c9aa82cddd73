"""Where finetuning starts: a pretrained encoder (weights only) under a new task head.

A sweep's starting point is a Composer checkpoint from `train` (or that run's save folder), a
Hugging Face directory, or a hub model name. A Composer checkpoint is exported once into the sweep
folder, so every job loads the same way: `from_pretrained` on a directory (or hub name), with a
check that only the task head, and the pooler an MLM model lacks, start from scratch.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

import mosaic_pretrain.model  # noqa: F401  (registers MosaicBERT with the Auto classes)
from mosaic_pretrain.data.tokenizer import load_tokenizer
from mosaic_pretrain.errors import CheckpointError, first_line
from mosaic_pretrain.train.checkpoints import latest_link
from mosaic_pretrain.train.export import RESOLVED_CONFIG, export_checkpoint, save_hf_directory

logger = logging.getLogger(__name__)

EXPORTED_START = "pretrained"  # the sweep's export of a Composer checkpoint
START_IDENTITY = "start.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
NEW_WEIGHTS = ("classifier.", "pooler.")  # may be missing from an encoder; all else must load


@dataclass(frozen=True)
class StartingPoint:
    """What a sweep starts from. `identity` changes whenever the weights may have changed."""

    kind: str  # composer_checkpoint | hf_directory | hub
    location: str
    recipe: str | None
    identity: dict


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def resolve_starting_point(text: str, recipe: str | None = None) -> StartingPoint:
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
        if not weights:
            raise CheckpointError(f"starting_point {path} has a config.json but no weights")
        identity = {"directory": str(path.resolve()), "weights": _file_identity(weights[0])}
        return StartingPoint("hf_directory", str(path.resolve()), None, identity)
    if path.is_dir() and latest_link(path).exists():
        path = latest_link(path).resolve()
    if path.is_file():
        checkpoint = path.resolve()
        recipe_path = Path(recipe) if recipe else checkpoint.parent / RESOLVED_CONFIG
        identity = {"checkpoint": _file_identity(checkpoint)}
        return StartingPoint("composer_checkpoint", str(checkpoint), str(recipe_path), identity)
    if path.exists():
        raise CheckpointError(
            f"starting_point {path} is neither a Hugging Face directory (config.json + weights), "
            f"a Composer checkpoint, nor a save folder with {latest_link(path).name}"
        )
    if text.startswith((".", "/", "~")) or text.endswith((".pt", ".pth")):
        raise CheckpointError(f"starting_point {text} does not exist")
    return StartingPoint("hub", text, None, {"hub": text})


def prepare_starting_point(start: StartingPoint, sweep_folder: Path) -> str:
    """A location `from_pretrained` loads: a Composer checkpoint is exported (once) first."""
    if start.kind != "composer_checkpoint":
        return start.location
    exported = sweep_folder / EXPORTED_START
    identity_file = sweep_folder / START_IDENTITY
    if exported.exists():
        recorded = json.loads(identity_file.read_text()) if identity_file.exists() else None
        if recorded == start.identity:
            return str(exported.resolve())
        raise CheckpointError(
            f"{exported} was exported from another checkpoint than {start.location}; use another "
            "output_folder for a sweep of this checkpoint"
        )
    logger.info("exporting %s to %s", start.location, exported)
    export_checkpoint(start.location, exported, start.recipe)
    identity_file.write_text(json.dumps(start.identity, indent=2))
    return str(exported.resolve())


def load_start_tokenizer(location: str, override: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer named in the sweep, else the one saved with the weights, else the one the
    model config records, else the hub name's own."""
    if override:
        return load_tokenizer(override)
    path = Path(location)
    if path.is_dir():
        if any((path / name).exists() for name in TOKENIZER_FILES):
            return load_tokenizer(str(path))
        recorded = getattr(AutoConfig.from_pretrained(path), "tokenizer_name", None)
        if recorded:
            return load_tokenizer(recorded)
        raise CheckpointError(
            f"{path} holds no tokenizer and its config names none; set tokenizer_name in the sweep"
        )
    return load_tokenizer(location)


def load_classifier(location: str, num_labels: int, regression: bool) -> torch.nn.Module:
    """The encoder at `location` under a new `num_labels`-way head (regression if asked)."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # we check and report new weights ourselves
    try:
        config = AutoConfig.from_pretrained(location)
        config.num_labels = num_labels
        config.problem_type = "regression" if regression else "single_label_classification"
        model, info = AutoModelForSequenceClassification.from_pretrained(
            location, config=config, output_loading_info=True, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError, RuntimeError) as error:
        first = first_line(error)
        raise CheckpointError(f"cannot load a classifier from {location}: {first}") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    prefix = f"{model.base_model_prefix}."

    def is_new(key: str) -> bool:
        return key.removeprefix(prefix).startswith(NEW_WEIGHTS)

    missing = [key for key in info["missing_keys"] if not is_new(key)]
    mismatched = [key for key, *_ in info["mismatched_keys"] if not is_new(key)]
    if missing or mismatched:
        problems = [f"missing {missing[:3]}"] if missing else []
        problems += [f"shapes differ for {mismatched[:3]}"] if mismatched else []
        raise CheckpointError(
            f"the weights in {location} do not match its model config ({'; '.join(problems)}); "
            "export the checkpoint again or fix config.json"
        )
    if not any(key.startswith("classifier.") for key in info["missing_keys"]):
        model._init_weights(model.classifier)  # a finetuned classifier's head never carries over
    fresh = sorted({key.removeprefix(prefix).split(".")[0] for key in info["missing_keys"]})
    logger.info(
        "%s from %s; new: %s", type(model).__name__, location, ", ".join(fresh) or "classifier"
    )
    return model


def save_encoder(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out: Path) -> Path:
    """The finetuned encoder (with its pooler, without the task head) for tasks that start from
    it, as MosaicBERT starts RTE, MRPC and STS-B from MNLI."""
    return save_hf_directory(model.base_model, tokenizer, out)
