"""The sweep YAML: defaults, overrides, and one-line errors for bad input."""

from pathlib import Path

import pytest

from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.glue.config import (
    TASK_DEFAULTS,
    hyperparameters,
    load_sweep,
    task_specs,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "glue"
GOOD = """\
run_name: test
starting_point: some/checkpoint.pt
data: {local: /data/glue}
tasks: [mnli, rte, sst2]
custom_tasks:
  vader: {text_columns: [sentence], label_column: score}
task_settings:
  sst2: {seeds: [1, 2], lr: 1.0e-4}
"""


def sweep(tmp_path, text=GOOD, overrides=()):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return load_sweep(path, list(overrides))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_loads(path):
    config = load_sweep(path, ["starting_point=x.pt"])
    assert task_specs(config)


def test_defaults_are_the_published_settings_and_overrides_apply(tmp_path):
    config = sweep(tmp_path)
    mnli = hyperparameters(config, "mnli")
    assert (mnli.lr, mnli.weight_decay, mnli.epochs, mnli.batch_size) == (5e-5, 5e-6, 3, 48)
    assert mnli.seeds == (19,) and mnli.start_from == "pretrained"
    assert hyperparameters(config, "rte").start_from == "mnli"
    assert len(hyperparameters(config, "rte").seeds) == 5
    sst2 = hyperparameters(config, "sst2")
    assert (sst2.lr, sst2.seeds, sst2.epochs) == (1e-4, (1, 2), TASK_DEFAULTS["sst2"].epochs)
    seeds = {task: len(TASK_DEFAULTS[task].seeds) for task in TASK_DEFAULTS}
    assert seeds == dict(mnli=1, qnli=1, qqp=1, sst2=3, cola=4, stsb=5, mrpc=5, rte=5)
    assert TASK_DEFAULTS["mrpc"].lr == 8e-5 and TASK_DEFAULTS["mrpc"].epochs == 10
    overridden = sweep(tmp_path, overrides=["tasks=[sst2,vader]", "task_settings.vader.epochs=7"])
    assert list(task_specs(overridden)) == ["sst2", "vader"]
    assert task_specs(overridden)["vader"].is_regression
    assert task_specs(overridden)["vader"].metrics == ("pearson", "spearman")
    assert hyperparameters(overridden, "vader").epochs == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tasks=[sst2,wnli]"], r"unknown task 'wnli'; choose from mnli, qnli, .*vader"),
        (["task_settings.sst2.lrr=1"], r"unknown key 'task_settings.sst2.lrr'"),
        (["task_settings.sst2.lr=fast"], r"task_settings.sst2.lr"),
        (["tasks=[rte]"], r"task_settings.rte.start_from='mnli'.*mnli is not in tasks"),
        (["task_settings.sst2.seeds=[]"], r"task_settings.sst2.seeds must list at least one"),
        (["task_settings.sst2.eval_interval=often"], r"eval_interval: 'often' is not a time"),
        (["score_policy=median"], r"score_policy"),
        (["parallel.workers=0"], r"parallel.workers=0 is out of range: it must be in \[1, 256\]"),
        (["custom_tasks.vader.metrics=[accuracy]"], r"'accuracy' does not apply to regression"),
        (["custom_tasks.sst2={text_columns: [a], label_column: b}"], r"sst2 is a GLUE task"),
        (["tasks=[sst2"], r"overrides: a value is not valid YAML"),
        (["task_settings.sst2.start_from=sst2"], r"cannot start from itself"),
    ],
)
def test_bad_sweeps_fail_in_one_line_naming_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        sweep(tmp_path, overrides=overrides)
    assert "\n" not in str(caught.value)


def test_a_custom_task_needs_its_columns(tmp_path):
    text = GOOD.replace("{text_columns: [sentence], label_column: score}", "{labels: [a, b]}")
    with pytest.raises(
        ConfigError, match=r"missing required key 'custom_tasks.vader.text_columns'"
    ):
        sweep(tmp_path, text)
    with pytest.raises(ConfigError, match=r"missing required key 'starting_point'"):
        sweep(tmp_path, GOOD.replace("starting_point: some/checkpoint.pt\n", ""))
