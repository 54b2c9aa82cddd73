"""Resume compatibility, unit level: a checkpoint's recipe against the current one."""

from pathlib import Path

import pytest

from mosaic_pretrain.config import load_config
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.train.resume import check_resume, recipe_record

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"


def record_without(recipe: dict, *dotted_keys: str) -> dict:
    for key in dotted_keys:
        *parents, leaf = key.split(".")
        section = recipe
        for parent in parents:
            section = section[parent]
        del section[leaf]
    return {"recipe": recipe, "code_version": "0.1.0 (older)"}


def test_keys_added_to_the_schema_after_a_checkpoint_count_as_their_defaults():
    """A checkpoint written before a key existed resumes under newer code, as long as the
    recipe leaves the new key at its default."""
    config = load_config(SMOKE, ["max_duration=8ba"])
    new_keys = (
        "model.model_config.ffn_activation",
        "model.model_config.ffn_param_matched",
        "optimizer.weight_decay_gate_ranges",
        "callbacks.gate_range_monitor",
    )
    old = record_without(recipe_record(config), *new_keys)
    check_resume(config, Path("old.pt"), old)

    changed = load_config(SMOKE, ["max_duration=8ba", "optimizer.weight_decay_gate_ranges=true"])
    with pytest.raises(ConfigError, match=r"changes optimizer\.weight_decay_gate_ranges"):
        check_resume(changed, Path("old.pt"), old)
    other_model = load_config(SMOKE, ["model.model_config.ffn_activation=xgeglu"])
    with pytest.raises(ConfigError, match=r"different model\.model_config\.ffn_activation"):
        check_resume(other_model, Path("old.pt"), old)


def test_a_resume_may_change_the_attention_backend_but_nothing_that_changes_the_function():
    """The backend owns no weights and computes the same function: a run may move to a machine
    with (or without) flash-attn. Sizes, activation and LayerNorm precision stay refused."""
    saved = {"recipe": recipe_record(load_config(SMOKE)), "code_version": "0.1.0"}
    for backend in ("flash_attn", "flex", "eager", "sdpa"):
        moved = load_config(SMOKE, [f"model.model_config.attention_backend={backend}"])
        check_resume(moved, Path("old.pt"), saved)
    for change in (
        "model.model_config.hidden_size=128",
        "model.model_config.num_attention_heads=8",
        "model.model_config.ffn_activation=swiglu",
        "model.model_config.low_precision_layernorm=true",
        "algorithms.fused_layernorm={}",
    ):
        key = change.split("=")[0].replace(".", r"\.")
        with pytest.raises(ConfigError, match=rf"cannot resume old\.pt with a different {key}"):
            check_resume(load_config(SMOKE, [change]), Path("old.pt"), saved)
