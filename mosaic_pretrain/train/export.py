"""`mosaic-pretrain export`: a Composer checkpoint -> a Hugging Face directory (config, safetensors
weights, tokenizer) that transformers' Auto classes load.

The model is rebuilt from the run's resolved recipe (saved beside its checkpoints), so the export
needs nothing but the checkpoint folder. The directory is written under a temporary name and
renamed when complete; an existing export is never overwritten.
"""

import shutil
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from mosaic_pretrain.config import PretrainConfig, load_config, to_yaml
from mosaic_pretrain.errors import CheckpointError
from mosaic_pretrain.train.builders import build_model, build_tokenizer
from mosaic_pretrain.train.init_weights import init_source
from mosaic_pretrain.train.model_card import CARD, ModelCard, last_eval, model_shape
from mosaic_pretrain.train.model_code import write_model_code
from mosaic_pretrain.train.resume import run_record
from mosaic_pretrain.train.safe_load import composer_weights, load_checkpoint

RESOLVED_CONFIG = "resolved_config.yaml"
MOSAIC_BERT = "mosaic_bert"  # the model_type of ours


def save_hf_directory(
    model, tokenizer, out_dir: str | Path, card: ModelCard | None = None, with_code: bool = False
) -> Path:
    """Write `model` and `tokenizer` (and a model card; with `with_code` a MosaicBERT's own code
    and auto_map) to `out_dir` atomically; refuse an existing directory."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise CheckpointError(f"{out_dir} already exists; choose a new export directory")
    if with_code and model.config.model_type != MOSAIC_BERT:
        raise CheckpointError(
            f"--with-code writes MosaicBERT's code; this is a {model.config.model_type} model, "
            "which transformers loads without it: export it without --with-code"
        )
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    if with_code:
        write_model_code(partial)
    if card is not None:
        (partial / CARD).write_text(card.render())
    partial.rename(out_dir)
    return out_dir


def run_card(
    config: PretrainConfig,
    model,
    tokenizer,
    made_by: str,
    trained: dict[str, int],
    metrics_folder: Path,
    code_version: str,
    with_code: bool,
) -> ModelCard:
    """The card of a model trained by `config`, up to the batch `trained` ends at."""
    loss, accuracy = last_eval(metrics_folder, trained.get("batches"))
    return ModelCard(
        title=f"{config.run_name} (mosaic-pretrain)",
        model_type=model.config.model_type,
        parameters=sum(parameter.numel() for parameter in model.parameters()),
        shape=model_shape(model.config),
        tokenizer=f"{tokenizer.name_or_path} ({len(tokenizer):,} tokens)",
        made_by=made_by,
        code_version=code_version,
        with_code=with_code,
        trained=trained,
        eval_loss=loss,
        eval_accuracy=accuracy,
        started_from=init_source(config.model),
        recipe_yaml=to_yaml(config),
    )


def trained_counts(timestamp: dict) -> dict[str, int]:
    """Batches, samples and tokens of a Composer Timestamp's state (as a checkpoint holds it)."""
    return {
        "batches": int(timestamp["batch"]),
        "samples": int(timestamp["sample"]),
        "tokens": int(timestamp["token"]),
    }


def load_composer_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model weights of a Composer checkpoint, names as in the transformers model, read by
    the safe loader (no code from the file runs)."""
    return composer_weights(load_checkpoint(checkpoint, mmap=False), checkpoint)


def model_from_checkpoint(
    checkpoint: str | Path, recipe: str | Path | None = None
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, PretrainConfig, dict]:
    """The transformers model of a Composer checkpoint, rebuilt from the run's resolved recipe
    (beside the checkpoint, or `recipe`) and holding the checkpoint's weights, every one of them;
    with the recipe's tokenizer, the recipe and the checkpoint's whole state. The model is in
    training mode, as built."""
    checkpoint = Path(checkpoint)
    recipe = Path(recipe) if recipe else checkpoint.parent / RESOLVED_CONFIG
    if not recipe.is_file():
        raise CheckpointError(
            f"no recipe for {checkpoint}: {recipe} is missing; pass the run's recipe with --recipe"
        )
    config = load_config(recipe)
    tokenizer = build_tokenizer(config)
    model = build_model(
        config.model,
        tokenizer,
        config.algorithms.fused_layernorm is not None,
        initial_weights=False,  # the checkpoint's weights replace them
    )
    state = load_checkpoint(checkpoint, mmap=False)
    weights = composer_weights(state, checkpoint)
    expected = set(model.state_dict())
    missing = sorted(expected - set(weights))
    unexpected = sorted(set(weights) - expected)
    # A tied decoder is saved under both names by some versions; only absent weights matter.
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {checkpoint} does not match the model of {recipe}: missing "
            f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
            f"{unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"checkpoint {checkpoint} does not match the model of {recipe} ({first})"
        ) from None
    return model, tokenizer, config, state


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    recipe: str | Path | None = None,
    with_code: bool = False,
) -> Path:
    checkpoint = Path(checkpoint)
    model, tokenizer, config, state = model_from_checkpoint(checkpoint, recipe)
    record = run_record(state) or {}
    card = run_card(
        config,
        model,
        tokenizer,
        made_by=f"`mosaic-pretrain export` of checkpoint {checkpoint.resolve().name}",
        trained=trained_counts(state["state"].get("timestamp", {}).get("Timestamp", {})),
        metrics_folder=checkpoint.parent,
        code_version=record.get("code_version", "unknown"),
        with_code=with_code,
    )
    return save_hf_directory(model.eval(), tokenizer, out_dir, card, with_code)
