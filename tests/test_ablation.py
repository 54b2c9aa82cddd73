"""`mosaic-pretrain ablate`: one run per value at equal steps, a table and plot, reruns that
skip finished runs, failures reported without stopping the others, bad values before training."""

import json
from pathlib import Path

import pytest

from mosaic_pretrain.ablation.command import run_ablation
from mosaic_pretrain.ablation.runs import OUTCOME_FILE, plan_runs
from mosaic_pretrain.cli import main
from mosaic_pretrain.errors import ConfigError

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "ablate-activations.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tmp_path_factory.mktemp("data") / "public-domain-en"


def tiny(corpus, tmp_path, *extra):
    return [
        f"data_local={corpus}",
        f"ablation.output_folder={tmp_path}/ablation",
        "model.model_config.num_hidden_layers=1",
        "global_train_batch_size=8",
        "device_train_microbatch_size=8",
        "device_eval_batch_size=16",
        "eval_subset_num_batches=2",
        "max_duration=4ba",
        "eval_interval=2ba",
        "save_interval=2ba",
        "log_to_console=false",
        "callbacks.speed_monitor=null",
        *extra,
    ]


@pytest.mark.slow
def test_each_value_runs_at_equal_steps_and_a_rerun_trains_nothing(corpus, tmp_path, monkeypatch):
    overrides = tiny(corpus, tmp_path, "ablation.values=[gelu,xgelu]", "ablation.seeds=[1,2]")
    report, table = run_ablation(RECIPE, overrides)
    folder = tmp_path / "ablation"
    names = sorted(path.parent.name for path in folder.glob(f"*/{OUTCOME_FILE}"))
    assert names == ["gelu-seed1", "gelu-seed2", "xgelu-seed1", "xgelu-seed2"]
    assert report["steps"] == [2, 4]
    gelu, xgelu = report["values"]
    assert gelu["seeds"] == [1, 2] and gelu["eval_loss"][4]["n"] == 2
    assert xgelu["parameters"] == gelu["parameters"] + 1  # one gate range, one block
    assert gelu["final_gate_range"] is None and xgelu["final_gate_range"]["mean"] != 0.0
    assert 0.0 <= gelu["final_eval_accuracy"]["mean"] <= 1.0
    runs = {(run["value"], run["seed"]): run for run in report["runs"]}
    expected = (runs["gelu", 1]["eval_loss"][4] + runs["gelu", 2]["eval_loss"][4]) / 2
    assert gelu["eval_loss"][4]["mean"] == pytest.approx(expected)
    assert runs["gelu", 1]["eval_loss"] != runs["gelu", 2]["eval_loss"]  # seeds differ
    assert "| gelu | " in table and "| xgelu | " in table and table.count("**") == 2
    for name in ("ablation.md", "ablation.csv", "ablation.json", "ablation.png"):
        assert (folder / name).stat().st_size > 0

    import mosaic_pretrain.ablation.runs as runs_module

    def must_not_train(config):
        raise AssertionError(f"{config.run_name} trained again")

    monkeypatch.setattr(runs_module, "train", must_not_train)
    again, _ = run_ablation(RECIPE, overrides)
    assert again["values"] == report["values"]


def test_a_failing_value_is_reported_and_the_others_finish(corpus, tmp_path, capsys):
    # lr=1 is legal (a warning), but its first steps blow the loss up past the spike guard
    overrides = tiny(
        corpus,
        tmp_path,
        "ablation.key=optimizer.lr",
        "ablation.values=['1e-3','1.0']",
        "loss_guard.spike_factor=1.5",
        "loss_guard.window=1",
    )
    assert main(["ablate", str(RECIPE), *overrides]) == 2
    report = json.loads((tmp_path / "ablation" / "ablation.json").read_text())
    statuses = {run["value"]: run["status"] for run in report["runs"]}
    assert statuses == {"1e-3": "finished", "1.0": "failed"}
    assert "spiked" in report["runs"][1]["error"]  # the loss guard's message
    err = capsys.readouterr().err
    assert "runs failed for 1.0" in err and err.count("\n") == 1


def test_a_value_the_recipe_refuses_stops_the_ablation_before_training(
    corpus, tmp_path, capsys, monkeypatch
):
    import mosaic_pretrain.ablation.runs as runs_module

    def must_not_train(config):
        raise AssertionError(f"{config.run_name} trained")

    monkeypatch.setattr(runs_module, "train", must_not_train)
    overrides = tiny(
        corpus, tmp_path, "ablation.key=optimizer.lr", "ablation.values=['1e-3','1e12']"
    )
    assert main(["ablate", str(RECIPE), *overrides]) == 2
    err = capsys.readouterr().err
    assert "ablation value '1e12': optimizer.lr=" in err and "out of range" in err
    assert err.count("\n") == 1


def test_bad_ablations_are_refused_before_any_training(corpus, tmp_path):
    with pytest.raises(ConfigError) as error:
        plan_runs(RECIPE, tiny(corpus, tmp_path, "ablation.values=[gelu,swish,mish]"))
    assert [problem.split(":")[0] for problem in error.value.problems] == [
        "ablation value 'swish'",
        "ablation value 'mish'",
    ]
    with pytest.raises(ConfigError, match=r"ablation.key='model.ffn' is not a key"):
        plan_runs(RECIPE, tiny(corpus, tmp_path, "ablation.key=model.ffn"))
    with pytest.raises(ConfigError, match=r"set by the ablation itself"):
        plan_runs(RECIPE, tiny(corpus, tmp_path, "ablation.key=seed"))
    with pytest.raises(ConfigError, match=r"no `ablation` section"):
        plan_runs(RECIPE, tiny(corpus, tmp_path, "ablation=null"))
    assert not (tmp_path / "ablation").exists()
