"""The MODEL arguments of `eval-lengths`: a Composer checkpoint, a run's save folder (its latest
checkpoint) or a Hugging Face directory (an export, an import, a run's export_folder), each
loaded as a masked-LM model with its own tokenizer and given a short, unique label."""

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

import mosaic_pretrain.model  # noqa: F401  (registers MosaicBERT with the Auto classes)
from mosaic_pretrain.data.tokenizer import load_tokenizer
from mosaic_pretrain.errors import CheckpointError, ConfigError, first_line
from mosaic_pretrain.train.checkpoints import folder_checkpoint, latest_link
from mosaic_pretrain.train.export import MOSAIC_BERT, model_from_checkpoint

CHECKPOINT_SUFFIXES = (".pt", ".pth")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
LOADABLE_TYPES = (MOSAIC_BERT, "bert")
MAX_PARENTS = 3  # folders added to tell two labels apart
# Saved with a BERT pretraining checkpoint but unused by masked-LM (next-sentence head, pooler).
UNUSED_BY_MLM = ("bert.pooler.", "cls.seq_relationship.", "bert.embeddings.position_ids")
WHAT_A_MODEL_IS = (
    "a MODEL is a Composer checkpoint (.pt), a run's save folder (with "
    f"{latest_link(Path('.')).name}) or a Hugging Face directory (config.json + weights)"
)


@dataclass
class EvalModel:
    """A model ready to score, and where it came from."""

    label: str
    path: Path
    kind: str  # checkpoint | save folder | hf directory
    source: Path  # the checkpoint file or directory actually loaded
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def position_limit(self) -> int | None:
        """The longest row a learned position table allows; None for ALiBi (MosaicBERT)."""
        if self.model_type == MOSAIC_BERT:
            return None
        return getattr(self.model.config, "max_position_embeddings", None)


def load_model(text: str, label: str) -> EvalModel:
    path = Path(text).expanduser()
    if not path.exists():
        raise CheckpointError(f"model {text} does not exist; {WHAT_A_MODEL_IS}")
    if path.is_dir() and (path / "config.json").is_file():
        model, tokenizer = load_hf_directory(path)
        return EvalModel(label, path, "hf directory", path, model, tokenizer)
    if path.is_dir():
        checkpoint = folder_checkpoint(path)
        if checkpoint is None:
            raise CheckpointError(
                f"model {text} is a folder without config.json or a checkpoint "
                f"({latest_link(path).name}, ep*-ba*-rank0.pt), so no Hugging Face directory "
                f"nor a save folder; {WHAT_A_MODEL_IS}"
            )
        model, tokenizer, _, _ = model_from_checkpoint(checkpoint)
        return EvalModel(label, path, "save folder", checkpoint, model, tokenizer)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(
            f"model {text} is a file but not a checkpoint (.pt); {WHAT_A_MODEL_IS}"
        )
    model, tokenizer, _, _ = model_from_checkpoint(path)
    return EvalModel(label, path, "checkpoint", path, model, tokenizer)


def load_hf_directory(path: Path) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """A masked-LM MosaicBERT or BERT from a directory, every weight it needs present."""
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}/config.json cannot be read ({first_line(error)})") from None
    if config.model_type == "bert" and hasattr(config, "alibi_starting_size"):
        raise CheckpointError(
            f"{path} is a MosaicBERT model in MosaicML's original layout; convert it with "
            f"`mosaic-pretrain import {path} DIR` and evaluate DIR"
        )
    if config.model_type not in LOADABLE_TYPES:
        raise CheckpointError(
            f"{path} holds a {config.model_type!r} model; eval-lengths loads "
            f"{' or '.join(LOADABLE_TYPES)} masked-LM models"
        )
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # we report missing weights ourselves
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path}: its weights cannot be loaded ({first_line(error)})"
        ) from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = [name for name in info["missing_keys"] if not name.startswith(UNUSED_BY_MLM)]
    if missing or info["mismatched_keys"]:
        names = missing or [name for name, *_ in info["mismatched_keys"]]
        raise CheckpointError(
            f"{path}: its weights do not fill its model ({'missing' if missing else 'misshapen'} "
            f"{', '.join(sorted(names)[:3])}); a masked-LM model (with its head) is needed"
        )
    return model, _directory_tokenizer(path, config)


def _directory_tokenizer(path: Path, config) -> PreTrainedTokenizerBase:
    """The tokenizer saved with the weights, else the one the config names."""
    if any((path / name).is_file() for name in TOKENIZER_FILES):
        tokenizer = load_tokenizer(str(path))
    elif getattr(config, "tokenizer_name", None):
        tokenizer = load_tokenizer(config.tokenizer_name)
    else:
        raise CheckpointError(f"{path} holds no tokenizer and its config.json names none")
    if len(tokenizer) > config.vocab_size:
        raise CheckpointError(
            f"{path}: its tokenizer has {len(tokenizer)} tokens, more than the model's "
            f"vocab_size {config.vocab_size}; it was saved with another model"
        )
    return tokenizer


def labels_for(texts: list[str], given: list[str] | None = None) -> list[str]:
    """`given`, else each path's name (a checkpoint without .pt), made unique by its parents and
    then by a number."""
    if given:
        if len(given) != len(texts):
            raise ConfigError(
                f"--label is given {len(given)} times for {len(texts)} models; give one per MODEL"
            )
        if len(set(given)) != len(given):
            raise ConfigError(f"--label names repeat ({', '.join(given)}); make them unique")
        return list(given)
    paths = [Path(text).expanduser().resolve() for text in texts]
    depths = [0] * len(paths)
    for _ in range(MAX_PARENTS):  # a/checkpoints and b/checkpoints: add parents
        names = [_name(path, depth) for path, depth in zip(paths, depths, strict=True)]
        clashing = [
            number
            for number, (path, name) in enumerate(zip(paths, names, strict=True))
            if any(other != path and names[i] == name for i, other in enumerate(paths))
        ]
        for number in clashing:
            depths[number] += 1
    names = [_name(path, depth) for path, depth in zip(paths, depths, strict=True)]
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # the same path twice, or parents that did not tell them apart
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


def _name(path: Path, parents: int) -> str:
    base = path.stem if path.suffix in CHECKPOINT_SUFFIXES else path.name
    return "/".join([*path.parts[len(path.parts) - 1 - parents : -1], base])
