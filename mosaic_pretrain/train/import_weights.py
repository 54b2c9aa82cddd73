"""`mosaic-pretrain import`: MosaicML's published MosaicBERT weights -> one of our Hugging Face
directories, which our Auto classes load and a recipe can start from.

Sources: a directory in the layout of the hub's `mosaicml/mosaic-bert-base` family (`config.json`
with `model_type: bert` and `alibi_starting_size`, weights as `pytorch_model.bin` or safetensors),
a Composer checkpoint written by MosaicML's BERT benchmark code (its model state under `model.`),
or a hub name, fetched when the hub is reachable.

The original layout, as MosaicML's `bert_layers.py` defines it, differs from ours in names only:
`attention.self.Wqkv` (rows: all heads' queries, then keys, then values, as ours),
`attention.output.dense` and `attention.output.LayerNorm`, `mlp.gated_layers` (its first half
is the one passed through GELU, as ours), `mlp.layernorm`, and the MLM head under
`cls.predictions` (`transform.dense`, `transform.LayerNorm`, `decoder` tied to the word
embeddings). Every source tensor must map to exactly one of ours with the same shape; anything
missing, extra or misshapen is an error listing it, never a partial load.
"""

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from mosaic_pretrain.callbacks.run_record import code_version
from mosaic_pretrain.data.tokenizer import load_tokenizer
from mosaic_pretrain.errors import CheckpointError, MosaicPretrainError
from mosaic_pretrain.model import MosaicBertConfig, MosaicBertForMaskedLM
from mosaic_pretrain.train.export import save_hf_directory
from mosaic_pretrain.train.model_card import ModelCard, model_shape
from mosaic_pretrain.train.resume import run_record
from mosaic_pretrain.train.safe_load import COMPOSER_MODEL_PREFIX, load_checkpoint

# MosaicML's published models ship no tokenizer files: they were trained with this one.
PUBLISHED_TOKENIZER = "bert-base-uncased"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HUB_FILES = ["config.json", "*.safetensors", "*.bin", "*.json", "*.txt"]

# (original name pattern, our name): applied to the first match only.
RENAMES = [
    (
        r"^bert\.encoder\.layer\.(\d+)\.attention\.self\.Wqkv\.",
        r"bert.encoder.layer.\1.attention.Wqkv.",
    ),
    (
        r"^bert\.encoder\.layer\.(\d+)\.attention\.output\.dense\.",
        r"bert.encoder.layer.\1.attention.output.",
    ),
    (
        r"^bert\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.",
        r"bert.encoder.layer.\1.attention.LayerNorm.",
    ),
    (r"^bert\.encoder\.layer\.(\d+)\.mlp\.layernorm\.", r"bert.encoder.layer.\1.mlp.LayerNorm."),
    (r"^bert\.encoder\.layer\.(\d+)\.mlp\.(gated_layers|wo)\.", r"bert.encoder.layer.\1.mlp.\2."),
    (
        r"^bert\.embeddings\.(word_embeddings|token_type_embeddings|LayerNorm)\.",
        r"bert.embeddings.\1.",
    ),
    (r"^cls\.predictions\.transform\.(dense|LayerNorm)\.", r"head.\1."),
    (r"^cls\.predictions\.decoder\.", r"head.decoder."),
]
# Saved by some versions besides the decoder's own bias (transformers' BERT head keeps both).
HEAD_BIAS_ALIAS = "cls.predictions.bias"
CONFIG_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
    "initializer_range",
    "alibi_starting_size",
)


def our_name(original: str) -> str | None:
    """Our parameter name for an original MosaicBERT one, or None if it has none."""
    for pattern, replacement in RENAMES:
        if re.match(pattern, original):
            return re.sub(pattern, replacement, original, count=1)
    return None


def _listed(names, limit: int = 4) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def config_from_original(original: dict, source: str) -> MosaicBertConfig:
    """Our config for an original MosaicBERT `config.json` (transformers' BertConfig fields)."""
    if original.get("model_type") == MosaicBertConfig.model_type:
        raise CheckpointError(
            f"{source} is already a mosaic-pretrain model (model_type "
            f"{MosaicBertConfig.model_type!r}): use it as it is, e.g. as "
            "model.pretrained_model_name; import reads MosaicML's published MosaicBERT models"
        )
    if original.get("model_type") != "bert" or "alibi_starting_size" not in original:
        raise CheckpointError(
            f"{source} is not a MosaicBERT config (needs model_type 'bert' and "
            f"alibi_starting_size, has model_type {original.get('model_type')!r}); import reads "
            "MosaicML's published MosaicBERT models"
        )
    activation = original.get("hidden_act", "gelu")
    if activation != "gelu":
        raise CheckpointError(
            f"{source} has hidden_act {activation!r}; MosaicBERT's head and gated feed-forward "
            "use exact GELU ('gelu'), the only one import maps"
        )
    missing = [field for field in CONFIG_FIELDS[:5] if field not in original]
    if missing:
        raise CheckpointError(f"{source} lacks {', '.join(missing)}; it is not a complete config")
    fields = {field: original[field] for field in CONFIG_FIELDS if field in original}
    try:
        return MosaicBertConfig(**fields, ffn_activation="geglu", ffn_param_matched=False)
    except MosaicPretrainError as error:
        raise CheckpointError(f"{source} cannot be used: {error}") from None


def mapped_weights(original: dict[str, torch.Tensor], model: torch.nn.Module, source: str):
    """`original` renamed to our names, checked to fill `model` exactly (names and shapes)."""
    original = {
        name.removeprefix(COMPOSER_MODEL_PREFIX): tensor for name, tensor in original.items()
    }
    expected = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    unused = []
    for name, tensor in original.items():
        target = our_name(name)
        if target is None and name == HEAD_BIAS_ALIAS:
            continue  # checked against the decoder's bias below
        if target is None or target not in expected:
            unused.append(name)
        else:
            renamed[target] = tensor
    bias_alias = original.get(HEAD_BIAS_ALIAS)
    if bias_alias is not None:
        decoder_bias = renamed.setdefault("head.decoder.bias", bias_alias)
        if decoder_bias.shape != bias_alias.shape or not torch.equal(decoder_bias, bias_alias):
            unused.append(f"{HEAD_BIAS_ALIAS} (differs from cls.predictions.decoder.bias)")
    embeddings = renamed.get("bert.embeddings.word_embeddings.weight")
    decoder = renamed.setdefault("head.decoder.weight", embeddings)
    if decoder is not None and embeddings is not None and not torch.equal(decoder, embeddings):
        unused.append("cls.predictions.decoder.weight (not tied to the word embeddings)")
    missing = [name for name in expected if name not in renamed]
    misshapen = [
        f"{name} {tuple(renamed[name].shape)} (expected {tuple(tensor.shape)})"
        for name, tensor in expected.items()
        if name in renamed and renamed[name].shape != tensor.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_listed(missing)}")
    if unused:
        problems.append(f"extra or unmappable {_listed(unused)}")
    if misshapen:
        problems.append(f"wrongly shaped {_listed(misshapen)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fill a MosaicBERT masked-LM model: {'; '.join(problems)}; import "
            "takes MosaicBERT masked-LM weights in MosaicML's layout, nothing is written"
        )
    return renamed


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        path = directory / name
        if path.is_file():
            if path.suffix == ".safetensors":
                try:
                    return load_file(str(path))
                except Exception as error:  # safetensors raises its own error types
                    raise CheckpointError(
                        f"{path} is not a readable safetensors file ({type(error).__name__}); "
                        "download it again"
                    ) from None
            return load_checkpoint(path, mmap=False)
    raise CheckpointError(
        f"{directory} holds no weights ({' or '.join(WEIGHT_FILES)}); point import at the "
        "model's directory"
    )


def _composer_config(state: dict, checkpoint: Path) -> dict:
    """The BertConfig MosaicML's Composer wrapper (HuggingFaceModel) records in a checkpoint."""
    try:
        content = state["state"]["integrations"]["huggingface"]["model"]["config"]["content"]
    except (KeyError, TypeError):
        raise CheckpointError(
            f"checkpoint {checkpoint} records no model config; pass the run's config.json with "
            "--config"
        ) from None
    return content


def read_source(source: Path, config_path: Path | None) -> tuple[dict, dict, Path | None]:
    """(original config, original weights, a directory that may hold a tokenizer)."""
    if source.is_dir():
        config_file = config_path or source / "config.json"
        weights = _read_weights(source)
        tokenizer_dir = source
    elif source.is_file():
        state = load_checkpoint(source, mmap=False)
        try:
            weights = state["state"]["model"]
        except (KeyError, TypeError):
            raise CheckpointError(
                f"{source} is not a Composer checkpoint (no state.model in it); pass a Composer "
                "checkpoint or a model directory"
            ) from None
        if run_record(state) is not None:
            raise CheckpointError(
                f"{source} is a checkpoint of mosaic-pretrain train, not of MosaicML's code: "
                f"write its model directory with `mosaic-pretrain export {source} OUT_DIR`"
            )
        if config_path is None:
            return _composer_config(state, source), weights, None
        config_file = config_path
        tokenizer_dir = None
    else:
        raise CheckpointError(
            f"{source} does not exist; pass a directory, a checkpoint or a hub name"
        )
    if not config_file.is_file():
        raise CheckpointError(f"no config at {config_file}; pass it with --config")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_file} is not valid JSON ({error})") from None
    return config, weights, tokenizer_dir


def fetch_from_hub(name: str) -> Path:
    """A hub model's files in the local cache; offline, an error saying how to get them."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=HUB_FILES))
    except Exception as error:  # offline, unknown repository, no permission: all end here
        raise CheckpointError(
            f"{name!r} is no local path and cannot be fetched from the Hugging Face hub "
            f"({type(error).__name__}); on a "
            f"machine with hub access run `huggingface-cli download {name} --local-dir DIR`, "
            "copy DIR here and pass DIR to import"
        ) from None


def _tokenizer_for(directory: Path | None, name: str | None) -> PreTrainedTokenizerBase:
    if name is not None:
        return load_tokenizer(name)
    if directory is not None and any(
        (directory / f).is_file() for f in ("tokenizer.json", "vocab.txt")
    ):
        return load_tokenizer(str(directory))
    return load_tokenizer(PUBLISHED_TOKENIZER)


def import_mosaic_bert(
    source: str,
    out_dir: str | Path,
    tokenizer: str | None = None,
    config_path: str | Path | None = None,
) -> Path:
    """Write our Hugging Face directory for an original MosaicBERT model (the source is only
    read); returns the directory."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise CheckpointError(f"{out_dir} already exists; choose a new directory")
    path = Path(source)
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source):
        path = fetch_from_hub(source)
    original_config, weights, tokenizer_dir = read_source(
        path, Path(config_path) if config_path else None
    )
    config = config_from_original(original_config, str(config_path or path))
    chosen = _tokenizer_for(tokenizer_dir, tokenizer)
    if len(chosen) > config.vocab_size:
        raise CheckpointError(
            f"tokenizer {chosen.name_or_path!r} has {len(chosen)} tokens but the model's "
            f"vocabulary has {config.vocab_size} rows; pass the tokenizer it was trained with "
            "(--tokenizer)"
        )
    model = MosaicBertForMaskedLM(config)
    model.load_state_dict(mapped_weights(weights, model, str(path)))  # in place: ties stay
    card = ModelCard(
        title=f"{source} (imported by mosaic-pretrain)",
        model_type=config.model_type,
        parameters=sum(parameter.numel() for parameter in model.parameters()),
        shape=model_shape(config),
        tokenizer=f"{chosen.name_or_path} ({len(chosen):,} tokens)",
        made_by=f"`mosaic-pretrain import` of {source}, MosaicML's MosaicBERT weights renamed to "
        "this layout (every tensor used, none changed)",
        code_version=code_version(),
    )
    return save_hf_directory(model.eval(), chosen, out_dir, card)
