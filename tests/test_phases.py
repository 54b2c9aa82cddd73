"""A new phase of an earlier run (model.init_from = its checkpoint or save folder): a longer
context with its own schedule, duration and batch size, the weights and (when asked) the
optimizer state of the earlier run, whose folder is never written to."""

import copy
import gc
import itertools
import re
from pathlib import Path

import pytest
import torch

from mosaic_pretrain.callbacks.graceful_stop import GracefulStop
from mosaic_pretrain.callbacks.metrics_file import METRICS_FILE, read_metrics
from mosaic_pretrain.commands.train import train
from mosaic_pretrain.config import load_config
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.train.builders import build_composer_model, build_tokenizer
from mosaic_pretrain.train.check import check_recipe
from mosaic_pretrain.train.export import load_composer_weights
from mosaic_pretrain.train.safe_load import load_checkpoint
from mosaic_pretrain.train.trainer import build_trainer
from tests.test_train import QUICK, SMOKE

SHORT = [*QUICK, "eval_subset_num_batches=1", "export_folder=null"]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """A finished 4-batch run at 64 tokens, with its data: the run a phase continues."""
    root = tmp_path_factory.mktemp("earlier")
    data = root / "data"
    config = load_config(
        SMOKE,
        [*SHORT, f"data_local={data}", f"save_folder={root}/run", "max_seq_len=64",
         "max_duration=4ba", "save_interval=2ba", "run_name=base"],
    )  # fmt: skip
    train(config).close()
    gc.collect()
    return root / "run", data


def phase_config(earlier, tmp_path, *overrides):
    folder, data = earlier
    return load_config(
        SMOKE,
        [*SHORT, f"data_local={data}", f"model.init_from={folder}", "max_seq_len=128",
         f"save_folder={tmp_path}/phase", "run_name=phase", *overrides],
    )  # fmt: skip


def snapshot(folder: Path) -> dict:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
    }


def test_a_longer_phase_starts_from_the_latest_weights_and_optimizer_state(earlier, tmp_path):
    folder, _ = earlier
    before = snapshot(folder)
    config = phase_config(
        earlier,
        tmp_path,
        "model.init_optimizer_state=true",
        "global_train_batch_size=4",
        "device_train_microbatch_size=4",
        "train_loader.dataset.packing=true",
        "optimizer.lr=3.0e-4",
        "max_duration=3ba",
        "scheduler.t_warmup=1ba",
        "callbacks.lr_monitor={}",
    )
    assert check_recipe(config) == []
    latest = (folder / "latest-rank0.pt").resolve()
    assert latest.name == "ep0-ba4-rank0.pt"
    saved_weights = load_composer_weights(latest)
    saved_state = load_checkpoint(latest, mmap=False)["state"]["optimizers"]["DecoupledAdamW"]

    built = build_trainer(config, GracefulStop())
    model_weights = built.model.model.state_dict()
    assert model_weights.keys() == saved_weights.keys()
    for name, tensor in saved_weights.items():
        assert torch.equal(model_weights[name], tensor), name
    optimizer = built.trainer.state.optimizers[0]
    names = {parameter: name for name, parameter in built.model.named_parameters()}
    assert len(optimizer.state) == len(saved_state["state"])
    for parameter, entry in optimizer.state.items():
        saved = saved_state["state"][names[parameter]]
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(entry[field], saved[field]), (names[parameter], field)
    # The phase's own hyperparameters and schedule, from its own batch 0.
    assert [group["initial_lr"] for group in optimizer.param_groups] == [3.0e-4]
    assert int(built.trainer.state.timestamp.batch) == 0
    built.trainer.fit()
    assert int(built.trainer.state.timestamp.batch) == 3
    assert int(built.trainer.state.timestamp.sample) == 12
    built.trainer.close()
    assert (tmp_path / "phase" / "ep0-ba3-rank0.pt").is_file()
    # Its own schedule from its own batch 0: warmup over 1 batch, then linear to 2% at batch 3
    # (the rate of batch k is that of time k - 1).
    lrs = read_metrics(tmp_path / "phase" / METRICS_FILE)["lr-DecoupledAdamW/group0"]
    assert lrs == pytest.approx({1: 0.0, 2: 3.0e-4, 3: 3.0e-4 * (1 - 0.98 / 2)}, rel=1e-9)
    assert snapshot(folder) == before  # the earlier run's folder is only read


def test_a_phase_without_optimizer_state_starts_adam_afresh(earlier, tmp_path):
    folder, _ = earlier
    checkpoint = folder / "ep0-ba2-rank0.pt"  # any checkpoint of the run, not only the latest
    config = phase_config(earlier, tmp_path, f"model.init_from={checkpoint}")
    tokenizer = build_tokenizer(config)
    model = build_composer_model(config, tokenizer)
    for name, tensor in load_composer_weights(checkpoint).items():
        assert torch.equal(model.model.state_dict()[name], tensor), name
    built = build_trainer(config, GracefulStop())
    assert len(built.trainer.state.optimizers[0].state) == 0
    built.trainer.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.model_config.num_hidden_layers=2"], "num_hidden_layers 1 \\(recipe: 2\\)"),
        (["model.model_config.ffn_activation=gelu"], "ffn_activation 'geglu'"),
        (["model.name=hf_bert"], "set model.name=mosaic_bert"),
    ],
)
def test_a_phase_of_another_model_is_refused(earlier, tmp_path, overrides, message):
    config = phase_config(earlier, tmp_path, *overrides)
    problems = check_recipe(config)
    assert any(re.search(message, problem) for problem in problems), problems


def test_a_phase_with_another_tokenizer_is_refused(earlier, tmp_path, bert_tokenizer):
    other = tmp_path / "tokenizer"
    changed = copy.deepcopy(bert_tokenizer)  # the session's own stays as it is
    changed.add_tokens(["zzzphasetoken"])  # the same rows once padded, other words
    changed.save_pretrained(other)
    config = phase_config(earlier, tmp_path, f"tokenizer_name={other}")
    problems = check_recipe(config)
    assert any("trained with tokenizer 'bert-base-uncased'" in p for p in problems), problems


def test_a_phase_never_writes_into_the_earlier_runs_folder(earlier, tmp_path):
    folder, _ = earlier
    for key in ("save_folder", "export_folder"):
        config = phase_config(earlier, tmp_path, f"{key}={folder}/next")
        problems = check_recipe(config)
        assert any(f"{key} {folder}/next is in {folder.resolve()}" in p for p in problems)


def test_bad_phase_sources_are_one_line_errors(earlier, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    config = phase_config(earlier, tmp_path, f"model.init_from={empty}")
    assert any("holds no config.json and no checkpoint" in p for p in check_recipe(config))
    broken = tmp_path / "cut.pt"
    broken.write_bytes(b"not a checkpoint")
    config = phase_config(earlier, tmp_path, f"model.init_from={broken}")
    assert any("truncated or not a Composer checkpoint" in p for p in check_recipe(config))
    with pytest.raises(ConfigError, match="init_optimizer_state takes the optimizer's state"):
        load_config(SMOKE, ["model.init_optimizer_state=true"])


def test_optimizer_state_needs_a_checkpoint_not_an_export(earlier, tmp_path):
    from mosaic_pretrain.cli import main

    folder, _ = earlier
    export = tmp_path / "hf"
    assert main(["export", str(folder / "latest-rank0.pt"), str(export)]) == 0
    config = phase_config(
        earlier, tmp_path, f"model.init_from={export}", "model.init_optimizer_state=true"
    )
    assert any("holds weights only" in problem for problem in check_recipe(config))
    weights_only = phase_config(earlier, tmp_path, f"model.init_from={export}")
    assert check_recipe(weights_only) == []  # an export still starts a longer run


def test_resuming_at_a_longer_length_points_to_a_new_phase(earlier, tmp_path):
    folder, data = earlier
    config = load_config(
        SMOKE,
        [*SHORT, f"data_local={data}", f"load_path={folder}/ep0-ba4-rank0.pt",
         "max_seq_len=128", "max_duration=6ba", f"save_folder={tmp_path}/resumed"],
    )  # fmt: skip
    problems = check_recipe(config)
    assert any("a longer context is a new phase" in p and "model.init_from=" in p for p in problems)


def test_hf_bert_is_refused_past_its_position_table():
    with pytest.raises(ConfigError, match="past hf_bert's 512-position table"):
        load_config(SMOKE, ["model.name=hf_bert", "max_seq_len=1024"])
    with pytest.raises(ConfigError, match=r"eval_loader\.dataset\.max_seq_len=640"):
        load_config(SMOKE, ["model.name=hf_bert", "eval_loader.dataset.max_seq_len=640"])
    load_config(SMOKE, ["model.name=hf_bert", "max_seq_len=512"])


PHASES = ["mosaic-bert-base.yaml", "mosaic-bert-base-512.yaml", "mosaic-bert-base-1024.yaml"]


def test_the_shipped_extension_recipes_continue_one_another(bert_tokenizer):
    from mosaic_pretrain.config.folders import run_folder
    from mosaic_pretrain.train.init_weights import function_differences
    from mosaic_pretrain.train.model_sizes import model_config

    recipes = [load_config(SMOKE.parent / name, world_size=8) for name in PHASES]
    for earlier, later in itertools.pairwise(recipes):
        assert Path(later.model.init_from) == run_folder(earlier)
        assert later.model.init_optimizer_state and later.train_loader.dataset.packing
        assert later.max_seq_len > earlier.max_seq_len
        assert later.eval_loader.dataset.max_seq_len == later.max_seq_len
        # the same token slots per batch as the base run, and the same network
        tokens = [recipe.global_train_batch_size * recipe.max_seq_len for recipe in recipes]
        assert len(set(tokens)) == 1
        configs = [model_config(recipe.model, bert_tokenizer, True) for recipe in (earlier, later)]
        assert function_differences(*configs, earlier.model.name) == []


def test_an_extension_recipe_without_its_earlier_run_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./runs/mosaic-bert-base-uncased here
    config = load_config(SMOKE.parent / PHASES[1], world_size=8)
    problems = check_recipe(config)
    assert any("model.init_from=./runs/mosaic-bert-base-uncased/checkpoints" in p for p in problems)


def test_a_phase_names_one_checkpoint_for_all_that_follows(earlier, tmp_path):
    from mosaic_pretrain.train.phase_start import pin_checkpoint

    folder, _ = earlier
    config = phase_config(earlier, tmp_path)
    pin_checkpoint(config.model)
    assert config.model.init_from == str((folder / "ep0-ba4-rank0.pt").resolve())


def test_a_wsd_runs_stable_checkpoint_guards_the_runs_folder(earlier, tmp_path):
    """Its checkpoint lies in SAVE/stable/: the run's folder is SAVE, not SAVE/stable."""
    import shutil

    run = tmp_path / "wsd"
    (run / "stable").mkdir(parents=True)
    shutil.copy(earlier[0] / "ep0-ba4-rank0.pt", run / "stable" / "ep0-ba4-rank0.pt")
    config = phase_config(
        earlier,
        tmp_path,
        f"model.init_from={run}/stable/ep0-ba4-rank0.pt",
        f"save_folder={run}/decay",
    )
    assert any(f"save_folder {run}/decay is in {run.resolve()}," in p for p in check_recipe(config))


def test_a_file_that_is_no_composer_checkpoint_says_what_to_name(earlier, tmp_path):
    weights = tmp_path / "pytorch_model.bin"
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2)}, weights)
    config = phase_config(earlier, tmp_path, f"model.init_from={weights}")
    problems = check_recipe(config)
    assert any("is not a Composer checkpoint of a mosaic-pretrain run" in p for p in problems)
