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
        (["mlm_probability=1.2"], "mlm_probability=1.2 is out of range: it must be in (0, 1)"),
        (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9] must be 2 numbers, each in [0, 1)"),
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
            "callbacks.gate_range_monitor.batch_log_interval=0 is out of range: it must be in [1,",
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


SMOKE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer.betas={}"],
            "optimizer.betas: a mapping where the recipe expects a list; write a list ([a, b])",
        ),
        (
            ["optimizer=[1]"],
            "optimizer: a list where the recipe expects a mapping; write a mapping ({key: value})",
        ),
        (["callbacks.glue_sweep.gpus={a: 1}"], "callbacks.glue_sweep.gpus: a mapping where"),
        (["train_loader.dataset.streams.x=[1]"], "train_loader.dataset.streams.x: a list where"),
        (["seed=-1"], "seed=-1 is out of range: it must be in [0, 4,294,967,295] (numpy's seeds)"),
        (
            ["callbacks.speed_monitor.window_size=0"],
            "callbacks.speed_monitor.window_size=0 is out of range: it must be in [1, ",
        ),
        (["optimizer.lr=.inf"], "optimizer.lr=inf: a number must be finite"),
        (["optimizer.lr=1e30"], "optimizer.lr=1e+30 is out of range: it must be in (0, 1]"),
        (["optimizer.eps=.nan"], "optimizer.eps=nan: a number must be finite"),
        (["optimizer.weight_decay=1"], "optimizer.weight_decay=1 is out of range"),
        (["max_duration=0ba"], "max_duration=0ba is zero: it must be a whole number above 0"),
        (["eval_interval=-1ba"], "eval_interval: '-1ba' is not a time"),
        (["save_interval=0sp"], "save_interval=0sp is zero"),
        (["console_log_interval=0ba"], "console_log_interval=0ba is zero"),
        (["max_duration=99999999999999999999ba"], "max_duration=99999999999999999999ba is out of"),
        (["max_seq_len=2147483648"], "max_seq_len=2,147,483,648 (2^31) is out of range"),
        (["global_train_batch_size=2147483648"], "global_train_batch_size=2,147,483,648 (2^31)"),
        (["train_loader.num_workers=2147483648"], "train_loader.num_workers=2,147,483,648"),
        (
            [
                "max_seq_len=65536",
                "device_train_microbatch_size=32768",
                "global_train_batch_size=32768",
            ],
            "device_train_microbatch_size=32768 rows x max_seq_len=65536 is 2,147,483,648 token "
            "slots, past the 2,147,483,647",
        ),
        (["save_folder=runs/{name}"], "save_folder='runs/{name}': {name} is not known"),
        (["export_folder=runs/{"], "export_folder='runs/{': Single '{'"),
        (['run_name=" "'], "run_name is empty"),
        (['data_local="a\\0b"'], "data_local='a\\x00b' holds a control character"),
        (["load_path=" + "x" * 300], "is too long for a path: it must be a path of at most"),
    ],
)
def test_out_of_range_values_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(SMOKE, overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_legal_but_surprising_values_are_warnings_not_errors():
    from mosaic_pretrain.config.load import recipe_warnings

    assert recipe_warnings(load_config(SMOKE)) == []
    config = load_config(
        SMOKE,
        ["save_num_checkpoints_to_keep=0", "eval_interval=100ba", "save_interval=2ep",
         "optimizer.lr=0.5"],
    )  # fmt: skip
    assert recipe_warnings(config) == [
        "save_num_checkpoints_to_keep=0: no checkpoint is kept in save_folder, so the run cannot "
        "be continued",
        "optimizer.lr=0.5: far above any BERT recipe's peak (MosaicBERT: 5e-4); expect divergence",
        "eval_interval=100ba is longer than max_duration=60ba: the model is evaluated only at the "
        "end of training",
    ]  # save_interval in ep: its length is known only once the data is read
    sample_interval = load_config(SMOKE, ["save_interval=64sp"])  # 2 batches of 32: shorter
    assert recipe_warnings(sample_interval) == []
    longer = load_config(SMOKE, ["save_interval=1921sp"])  # 60 batches of 32 = 1920 samples
    assert recipe_warnings(longer) == [
        "save_interval=1921sp is longer than max_duration=60ba: the only checkpoint is the one "
        "at the end"
    ]
