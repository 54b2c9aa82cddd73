"""`mosaic-pretrain export`: a Composer checkpoint -> a Hugging Face directory (config, safetensors
weights, tokenizer) that transformers' Auto classes load.

The model is rebuilt from the run's resolved recipe (saved beside its checkpoints), so the export
needs nothing but the checkpoint folder. The directory is written under a temporary name and
renamed when complete; an existing export is never overwritten.
"""

import shutil
from pathlib import Path

import torch

from mosaic_pretrain.config import load_config
from mosaic_pretrain.errors import CheckpointError
from mosaic_pretrain.train.builders import build_model, build_tokenizer
from mosaic_pretrain.train.safe_load import load_checkpoint

RESOLVED_CONFIG = "resolved_config.yaml"
COMPOSER_MODEL_PREFIX = "model."  # the ComposerModel keeps the transformers model as `.model`


def save_hf_directory(model, tokenizer, out_dir: str | Path) -> Path:
    """Write `model` and `tokenizer` to `out_dir` atomically; refuse an existing directory."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise CheckpointError(f"{out_dir} already exists; choose a new export directory")
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(out_dir)
    return out_dir


def load_composer_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model weights of a Composer checkpoint, names as in the transformers model, read by
    the safe loader (no code from the file runs)."""
    state = load_checkpoint(checkpoint, mmap=False)
    try:
        weights = state["state"]["model"]
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {checkpoint} is corrupt or not a Composer checkpoint "
            f"(no {error} in it); use another checkpoint of the run"
        ) from None
    return {name.removeprefix(COMPOSER_MODEL_PREFIX): tensor for name, tensor in weights.items()}


def export_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, recipe: str | Path | None = None
) -> Path:
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
    weights = load_composer_weights(checkpoint)
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
    return save_hf_directory(model.eval(), tokenizer, out_dir)
