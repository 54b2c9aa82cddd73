"""Recipes: the published form loads; every bad input is one line naming its key."""

from pathlib import Path

import pytest
import yaml

from mosaic_pretrain.config import load_config, to_yaml
from mosaic_pretrain.config.schema import ModelName, Precision
from mosaic_pretrain.errors import ConfigError

PUBLISHED = Path(__file__).parent / "fixtures" / "published_mosaic_bert_base.yaml"


def test_a_recipe_in_the_published_form_loads_unchanged():
    config = load_config(PUBLISHED)
    assert config.run_name == "mosaic-bert-base-uncased"
    assert config.model.name is ModelName.mosaic_bert
    assert config.model.pretrained_model_name == "bert-base-uncased"  # interpolated
    assert config.train_loader.dataset.local == "./my-copy-c4"
    assert config.train_loader.dataset.remote is None
    assert config.train_loader.dataset.max_seq_len == 128
    assert config.eval_loader.dataset.mlm_probability == 0.15
    assert config.optimizer.betas == [0.9, 0.98]
    assert config.precision is Precision.amp_bf16
    assert config.algorithms.fused_layernorm is not None
    assert config.callbacks.speed_monitor.window_size == 500
    assert config.model.model_config.overrides() == {
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "attention_probs_dropout_prob": 0.0,
    }


def test_overrides_and_interpolation():
    config = load_config(
        PUBLISHED,
        ["optimizer.lr=1e-4", "tokenizer_name=my/tok", "device_train_microbatch_size=auto"],
    )
    assert config.optimizer.lr == 1e-4
    assert config.train_loader.dataset.tokenizer_name == "my/tok"
    assert config.device_train_microbatch_size == "auto"


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_config(PUBLISHED)
    saved = tmp_path / "resolved.yaml"
    saved.write_text(to_yaml(config))
    assert "${" not in saved.read_text()
    assert load_config(saved) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer.lrr=1"],
            "unknown key 'optimizer.lrr': Key 'lrr' not in 'OptimizerSection'. Did you mean: 'lr'?",
        ),
        (["train_loader.dataset.lcal=x"], "unknown key 'train_loader.dataset.lcal'"),
        (["max_seq_len=abc"], "max_seq_len: Value 'abc' of type 'str' could not be converted"),
        (["precision=bf16"], "precision: Invalid value 'bf16', expected one of [fp32, amp_bf16"),
        (["model.name=roberta"], "model.name: Invalid value 'roberta'"),
        (
            ["global_train_batch_size=4000"],
            "global_train_batch_size=4000 is not divisible by "
            "world size 1 x device_train_microbatch_size=128",
        ),
        (["scheduler.t_warmup=1.5dur"], "scheduler.t_warmup=1.5dur is not shorter than"),
        (
            ["max_duration=100ba", "scheduler.t_warmup=200ba"],
            "scheduler.t_warmup=200ba is not shorter than max_duration=100ba",
        ),
        (["max_duration=10 batches"], "max_duration: '10 batches' is not a time"),
        (["device_train_microbatch_size=half"], "device_train_microbatch_size='half': a positive"),
        (["mlm_probability=1.2"], "mlm_probability must be in (0, 1)"),
        (["optimizer.betas=[0.9]"], "optimizer.betas must be two numbers"),
        (
            ["model.model_config.hidden_size=100"],
            "model.model_config: hidden_size=100 is not divisible by num_attention_heads=12",
        ),
        (["model.model_config.attention_backend=fast"], "attention_backend='fast' is unknown"),
        (["model.model_config.preset=huge"], "model.model_config.preset='huge' is unknown"),
        (
            ["model.model_config.ffn_activation=swish"],
            "model.model_config: ffn_activation='swish' is unknown; choose one of gelu, silu,",
        ),
        (
            ["model.name=hf_bert", "model.model_config.ffn_activation=swiglu"],
            "model.model_config.ffn_activation applies to model.name=mosaic_bert only",
        ),
        (
            ["callbacks.gate_range_monitor.batch_log_interval=0"],
            "callbacks.gate_range_monitor.batch_log_interval must be at least 1",
        ),
        (["autoresume=true", "save_folder=null"], "autoresume: true needs a save_folder"),
        (["nokey"], "override 'nokey' is not key=value"),
    ],
)
def test_bad_values_name_their_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(PUBLISHED, overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_batch_must_split_across_devices():
    with pytest.raises(ConfigError, match="not divisible by world size 3"):
        load_config(PUBLISHED, world_size=3)
    assert load_config(PUBLISHED, world_size=8).global_train_batch_size == 4096


def test_missing_required_key(tmp_path):
    recipe = yaml.safe_load(PUBLISHED.read_text())
    del recipe["run_name"]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match="missing required key 'run_name'"):
        load_config(path)


def test_malformed_yaml_and_missing_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: [1,\nb: 2\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line 3, column 1"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


RECIPES = sorted((Path(__file__).resolve().parent.parent / "configs" / "pretrain").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_loads(recipe):
    cpu_sized = "smoke" in recipe.name or "ablate" in recipe.name
    assert load_config(recipe, world_size=1 if cpu_sized else 8).run_name


def test_recipes_build_the_models_they_name(bert_tokenizer):
    from mosaic_pretrain.model import MosaicBertForMaskedLM
    from mosaic_pretrain.train.builders import build_model

    configs = Path(__file__).resolve().parent.parent / "configs" / "pretrain"
    mosaic = build_model(
        load_config(configs / "mosaic-bert-base.yaml").model, bert_tokenizer, low_precision_ln=True
    )
    assert isinstance(mosaic, MosaicBertForMaskedLM)
    assert sum(p.numel() for p in mosaic.parameters()) == 137_400_384
    assert mosaic.config.tokenizer_vocab_size == 30522
    baseline = build_model(
        load_config(configs / "hf-bert-base.yaml").model, bert_tokenizer, low_precision_ln=False
    )
    assert type(baseline).__name__ == "BertForMaskedLM"
    assert sum(p.numel() for p in baseline.parameters()) == 109_518_912
