"""Starting a pretraining run from saved weights (`model.init_from`): weights only.

The recipe stays the one description of the model: it is built from the recipe's sizes, and the
source's weights are loaded into it, after a check that the source holds that same network (its
sizes, feed-forward, LayerNorm epsilon, vocabulary, tied decoder and, when it carries one, its
tokenizer). Dropout, the attention kernel and low-precision LayerNorm are the recipe's: they
change how the function is computed or regularised, not what the weights mean (a resume keeps
low-precision LayerNorm only so that a run continues as it began).
The optimizer, schedule and step count start fresh. Because the recipe alone fixes the model, an
export or a resume of the run never needs the source again.

Sources: for mosaic_bert, a directory of ours (`mosaic-pretrain export`, `import`, a run's
export_folder) or a hub name holding one; for hf_bert, a transformers BERT directory
(`save_pretrained`) or hub name, e.g. `bert-base-uncased`.
"""

import logging
from pathlib import Path

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from mosaic_pretrain.config.schema import ModelName, ModelSection
from mosaic_pretrain.data.tokenizer import load_tokenizer, tokenizer_fingerprint
from mosaic_pretrain.errors import CheckpointError, ConfigError, MosaicPretrainError, first_line
from mosaic_pretrain.model import MosaicBertConfig

logger = logging.getLogger(__name__)

KEY = "model.init_from"
# Fields that fix the function the weights compute: they must be the recipe's. The others
# (dropout, attention kernel, low-precision LayerNorm, init range) are the recipe's to choose.
SAME_FUNCTION = {
    ModelName.mosaic_bert: (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "intermediate_size", "type_vocab_size", "layer_norm_eps", "ffn_activation",
        "ffn_param_matched", "tie_word_embeddings",
    ),
    ModelName.hf_bert: (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "intermediate_size", "type_vocab_size", "layer_norm_eps", "hidden_act",
        "max_position_embeddings", "position_embedding_type", "tie_word_embeddings",
    ),
}  # fmt: skip
# Keys a recipe sets under model.model_config; the rest follow from the model's kind.
RECIPE_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "type_vocab_size", "layer_norm_eps", "ffn_activation", "ffn_param_matched",
)  # fmt: skip
# A BERT checkpoint of the pretraining task (the hub's bert-base-uncased) also holds the pooler
# and the next-sentence head, which a masked-LM model has no use for.
UNUSED_BY_MLM = ("bert.pooler.", "cls.seq_relationship.", "bert.embeddings.position_ids")
MLM_HEADS = ("head.", "cls.predictions.")  # ours, BERT's
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def init_source(section: ModelSection) -> str | None:
    """The weights a run starts from: `init_from`, or MosaicML's hf_bert `use_pretrained`."""
    if section.init_from is not None:
        return section.init_from
    if section.use_pretrained:
        return section.pretrained_model_name
    return None


def _source_key(section: ModelSection) -> str:
    if section.init_from is None and section.use_pretrained:
        return "model.pretrained_model_name"  # with use_pretrained: the weights' name
    return KEY


def source_config(source: str, key: str = KEY) -> PretrainedConfig:
    """The config saved with the weights at `source` (a directory or a hub name)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{key}={source} holds no config.json and no checkpoint; point it at a "
                "directory written by mosaic-pretrain export or import (or save_pretrained), "
                "or at an earlier run's save_folder or checkpoint"
            )
    elif path.exists():
        raise ConfigError(
            f"{key}={source} is a file; a Composer checkpoint starts a run through "
            f"`mosaic-pretrain export {source} DIR` and {key}=DIR, or resumes with load_path"
        )
    elif source.startswith((".", "/", "~")):
        raise ConfigError(
            f"{key}={source} does not exist; point it at a model directory (export, import), "
            "or at an earlier run's save_folder or checkpoint (train that run first)"
        )
    try:
        return AutoConfig.from_pretrained(str(path) if path.is_dir() else source)
    except (OSError, ValueError) as error:
        if path.is_dir():
            reason = first_line(error)
            raise ConfigError(f"{key}={source}: config.json cannot be read ({reason})") from None
        raise ConfigError(
            f"{key}={source!r} is no local directory and cannot be fetched from the Hugging "
            f"Face hub ({first_line(error)}); on a machine with hub access run "
            f"`huggingface-cli download {source} --local-dir DIR`, copy DIR here and set {key}=DIR"
        ) from None


def _kind_problem(saved: PretrainedConfig, name: ModelName, source: str, key: str) -> str | None:
    """Whether the source is the kind of model the recipe trains."""
    kind = saved.model_type
    if kind == MosaicBertConfig.model_type:
        if name is ModelName.mosaic_bert:
            return None
        return f"{key}={source} is a MosaicBERT model; set model.name=mosaic_bert to continue it"
    if kind == "bert" and hasattr(saved, "alibi_starting_size"):
        return (
            f"{key}={source} is a MosaicBERT model in MosaicML's original layout; convert it "
            f"with `mosaic-pretrain import {source} DIR` and set {key}=DIR"
        )
    if kind == "bert":
        if name is ModelName.hf_bert:
            return None
        return (
            f"{key}={source} is a BERT model (transformers' BertForMaskedLM layout); set "
            "model.name=hf_bert to continue it (MosaicBERT's ALiBi and gated feed-forward have "
            "no BERT weights to start from)"
        )
    return f"{key}={source} is a {kind!r} model; {name.value} starts from mosaic_bert or bert ones"


def function_differences(
    saved: PretrainedConfig, recipe: PretrainedConfig, name: ModelName
) -> list[str]:
    found = []
    for field in SAME_FUNCTION[name]:
        theirs, ours = getattr(saved, field, None), getattr(recipe, field, None)
        if theirs != ours:
            settable = field in RECIPE_KEYS
            found.append(
                f"{field} {theirs!r} (recipe: {ours!r}"
                + ("" if settable else f", which {name.value} fixes")
                + ")"
            )
    return found


def size_hint(saved: PretrainedConfig, differing: list[str], section: ModelSection) -> str:
    """How to make the recipe describe the source: the keys to set, or a preset of its sizes."""
    from mosaic_pretrain.model import PRESETS

    fields = [entry.split()[0] for entry in differing]
    settable = [field for field in fields if field in RECIPE_KEYS]
    if not settable:
        return f"{section.name.value} cannot continue this model"
    overridden = set(section.model_config.overrides())  # a preset would not change these

    def assignments(fields) -> str:
        return " ".join(f"model.model_config.{field}={getattr(saved, field)!r}" for field in fields)

    for preset, sizes in PRESETS.items():
        matches = all(getattr(saved, field) == size for field, size in sizes.items())
        if matches and len(set(settable) & set(sizes)) > 1 and not overridden & set(settable):
            rest = [field for field in settable if field not in sizes]
            return f"set model.model_config.preset={preset} {assignments(rest)}".rstrip()
    return f"set {assignments(settable)}"


def _tokenizer_problem(source: str, tokenizer: PreTrainedTokenizerBase, key: str) -> str | None:
    path = Path(source).expanduser()
    if not path.is_dir() or not any((path / name).is_file() for name in TOKENIZER_FILES):
        return None  # a hub name, or a directory without a tokenizer: the vocabulary size rules
    try:
        saved = load_tokenizer(str(path))
    except MosaicPretrainError as error:
        return f"{key}={source}: its tokenizer cannot be loaded ({error})"
    if tokenizer_fingerprint(saved) == tokenizer_fingerprint(tokenizer):
        return None
    return (
        f"{key}={source} was saved with another tokenizer ({len(saved)} tokens) than the "
        f"recipe's {tokenizer.name_or_path!r} ({len(tokenizer)} tokens): its token ids would mean "
        f"other words; set tokenizer_name={source} (or the tokenizer it was trained with)"
    )


def init_problems(
    section: ModelSection, recipe: PretrainedConfig, tokenizer: PreTrainedTokenizerBase
) -> list[str]:
    """Why the weights the recipe starts from cannot fill the recipe's model (empty: they can).
    `recipe` is the config of the model the recipe builds."""
    source = init_source(section)
    if source is None:
        return []
    key = _source_key(section)
    try:
        saved = source_config(source, key)
    except MosaicPretrainError as error:
        return error.problems
    kind = _kind_problem(saved, section.name, source, key)
    if kind is not None:
        return [kind]
    problems = []
    differing = function_differences(saved, recipe, section.name)
    if differing:
        problems.append(
            f"{key}={source} holds another model than the recipe's: {', '.join(differing)}; "
            f"{size_hint(saved, differing, section)}"
        )
    if saved.vocab_size < len(tokenizer):
        problems.append(
            f"{key}={source} has vocab_size {saved.vocab_size}, fewer rows than tokenizer "
            f"{tokenizer.name_or_path!r} has tokens ({len(tokenizer)})"
        )
    tokenizer_problem = _tokenizer_problem(source, tokenizer, key)
    if tokenizer_problem is not None:
        problems.append(tokenizer_problem)
    return problems


def load_initial_model(
    model_class, config: PretrainedConfig, section: ModelSection, tokenizer
) -> torch.nn.Module:
    """A `model_class` of the recipe's `config` holding the source's weights, every one of them
    used (a BERT pretraining checkpoint's pooler and next-sentence head aside)."""
    problems = init_problems(section, config, tokenizer)
    if problems:
        raise ConfigError("; ".join(problems), problems)
    source, key = init_source(section), _source_key(section)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # we report unused and missing weights ourselves
    try:
        model, info = model_class.from_pretrained(
            str(Path(source).expanduser()) if Path(source).expanduser().is_dir() else source,
            config=config,
            output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{key}={source}: its weights cannot be loaded ({first_line(error)})"
        ) from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    unexpected = [name for name in info["unexpected_keys"] if not name.startswith(UNUSED_BY_MLM)]
    missing, mismatched = info["missing_keys"], [name for name, *_ in info["mismatched_keys"]]
    if missing and all(name.startswith(MLM_HEADS) for name in missing):
        raise CheckpointError(
            f"{key}={source} holds an encoder without the masked-LM head (e.g. a GLUE finetune's "
            "encoder, or a BertModel); pretraining continues from a masked-LM model: an export "
            "of a pretraining run, an import, or a BertForMaskedLM / BertForPreTraining"
        )
    if missing or unexpected or mismatched:
        found = [
            f"{label} {', '.join(sorted(names)[:4])}{' ...' if len(names) > 4 else ''}"
            for label, names in (
                ("missing", missing), ("unused", unexpected), ("misshapen", mismatched)
            )
            if names
        ]  # fmt: skip
        raise CheckpointError(
            f"{key}={source}: its weights do not fill the model its config.json describes "
            f"({'; '.join(found)}); export or import it again"
        )
    dropped = sorted(set(info["unexpected_keys"]) - set(unexpected))
    unused = f" (unused: {', '.join(dropped)})" if dropped else ""
    logger.info("starting from the weights of %s%s", source, unused)
    return model
