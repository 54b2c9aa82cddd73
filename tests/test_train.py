"""Pretraining end to end on CPU: the smoke recipe, and resume equivalence."""

import gc
import json
from pathlib import Path

import pytest
import torch

from mosaic_pretrain.callbacks.metrics_file import CURVES_FILE, METRICS_FILE, read_metrics
from mosaic_pretrain.cli import main
from mosaic_pretrain.commands.train import RESOLVED_CONFIG, train
from mosaic_pretrain.config import load_config
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.train.export import load_composer_weights
from tests.data_helpers import shared_memory_of

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"
# Small and quick: a 1-layer mini model, short runs, no console noise.
QUICK = [
    "model.model_config.num_hidden_layers=1",
    "global_train_batch_size=8",
    "device_train_microbatch_size=8",
    "device_eval_batch_size=32",
    "log_to_console=false",
    "autoresume=false",  # a new run each time (the smoke recipe continues its own)
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The shipped corpus, converted once for the module by the recipe's first run."""
    return tmp_path_factory.mktemp("data") / "public-domain-en"


def run(corpus, tmp_path, *overrides):
    paths = [
        f"data_local={corpus}",
        f"save_folder={tmp_path}/checkpoints",
        f"export_folder={tmp_path}/hf",
    ]
    config = load_config(SMOKE, [*QUICK, *paths, *overrides])
    trainer = train(config)
    weights = {k: v.detach().clone() for k, v in trainer.state.model.state_dict().items()}
    metrics = {k: float(v.compute()) for k, v in trainer.state.eval_metrics.get("eval", {}).items()}
    datasets = [trainer.state.train_dataloader.dataset]
    datasets += [evaluator.dataloader.dataloader.dataset for evaluator in trainer.state.evaluators]
    trainer.close()
    # Closing the Trainer frees its datasets' shared memory (ReleaseDataMemory), which streaming
    # would keep until the interpreter exits.
    for dataset in datasets:
        assert shared_memory_of(dataset) == {"named": [], "held": []}
    del trainer, datasets
    gc.collect()
    return weights, metrics


def test_smoke_recipe_trains_evaluates_and_saves(corpus, tmp_path):
    monitors = [
        "callbacks.speed_monitor.window_size=2",
        "callbacks.optimizer_monitor.batch_log_interval=1",
    ]
    _, metrics = run(
        corpus, tmp_path, "max_duration=4ba", "eval_interval=4ba", "save_interval=2ba", *monitors
    )
    assert set(metrics) == {"LanguageCrossEntropy", "MaskedAccuracy"}
    assert 0 < metrics["LanguageCrossEntropy"] < 11
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").glob("ep*-ba*-rank0.pt"))
    assert checkpoints == ["ep0-ba2-rank0.pt", "ep0-ba4-rank0.pt"]
    resolved = load_config(tmp_path / "checkpoints" / RESOLVED_CONFIG)
    assert resolved.max_duration == "4ba" and resolved.run_name == "smoke"
    series = read_metrics(tmp_path / "checkpoints" / METRICS_FILE)
    assert sorted(series["loss/train/total"]) == [0, 1, 2, 3]
    assert all(value > 0 for value in series["throughput/tokens_per_sec"].values())
    assert "metrics/eval/LanguageCrossEntropy" in series
    assert all(value > 0 for value in series["l2_norm/grad/global"].values())
    assert (tmp_path / "checkpoints" / CURVES_FILE).stat().st_size > 10_000


def test_resume_from_a_mid_run_checkpoint_is_bit_identical(corpus, tmp_path):
    """A 4-batch run, and the same run resumed from its batch-2 checkpoint, end equal (CPU,
    float32): same samples in the same order, same masks, same optimizer and LR state."""
    common = [
        "max_duration=4ba",
        "eval_interval=4ba",
        "save_interval=2ba",
        "save_num_checkpoints_to_keep=-1",
    ]
    full, _ = run(corpus, tmp_path / "full", *common)
    checkpoint = tmp_path / "full" / "checkpoints" / "ep0-ba2-rank0.pt"
    resumed, _ = run(corpus, tmp_path / "resumed", *common, f"load_path={checkpoint}")
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name


def test_a_resumed_run_may_move_to_another_attention_backend(corpus, tmp_path):
    """The batch-2 checkpoint of an sdpa run, continued with the eager reference, ends where the
    sdpa run ends, within float32 rounding: the backend is no part of the saved run."""
    common = [
        "max_duration=4ba",
        "eval_interval=4ba",
        "save_interval=2ba",
        "save_num_checkpoints_to_keep=-1",
        "model.model_config.attention_probs_dropout_prob=0.0",  # the backends' RNG use differs
    ]
    full, _ = run(corpus, tmp_path / "full", *common, "model.model_config.attention_backend=sdpa")
    checkpoint = tmp_path / "full" / "checkpoints" / "ep0-ba2-rank0.pt"
    moved, _ = run(
        corpus,
        tmp_path / "moved",
        *common,
        "model.model_config.attention_backend=eager",
        f"load_path={checkpoint}",
    )
    for name in full:
        torch.testing.assert_close(moved[name], full[name], rtol=1e-4, atol=1e-5, msg=name)


def test_the_same_recipe_twice_gives_the_same_weights(corpus, tmp_path):
    """The seed covers everything, the model's initial weights included."""
    common = ["max_duration=2ba", "eval_interval=2ba", "save_interval=2ba"]
    first, first_metrics = run(corpus, tmp_path / "first", *common)
    torch.manual_seed(12345)  # whatever the process did before must not matter
    second, second_metrics = run(corpus, tmp_path / "second", *common)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert first_metrics == second_metrics


def test_an_existing_export_folder_is_refused_before_training(corpus, tmp_path):
    (tmp_path / "hf").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"export_folder .* already exists"):
        run(corpus, tmp_path, "max_duration=2ba")
    assert not (tmp_path / "checkpoints").exists()


def test_train_command_reports_bad_recipes_in_one_line(capsys):
    assert main(["train", str(SMOKE), "optimizer.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Did you mean: 'lr'?" in err


def load_config_text(text: str, tmp_path: Path):
    path = tmp_path / "card_recipe.yaml"
    path.write_text(text)
    return load_config(path)


def test_export_gives_a_directory_transformers_loads_with_the_same_logits(corpus, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from mosaic_pretrain.errors import CheckpointError
    from mosaic_pretrain.train.export import export_checkpoint

    config = load_config(
        SMOKE,
        [
            *QUICK,
            f"data_local={corpus}",
            "max_duration=2ba",
            "eval_interval=2ba",
            "save_interval=2ba",
            f"save_folder={tmp_path}/checkpoints",
            f"export_folder={tmp_path}/hf",
        ],
    )
    trainer = train(config)
    trained = trainer.state.model.model.eval()
    checkpoint = tmp_path / "checkpoints" / "ep0-ba2-rank0.pt"
    assert main(["export", str(checkpoint), str(tmp_path / "exported")]) == 0
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "exported")
    batch = tokenizer(
        ["The whale swam in the sea.", "Call me Ishmael."], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = trained(**batch).logits
        for folder in ("exported", "hf"):  # by the command, and at the end of training
            # safetensors only, and our registered classes: no code from the directory runs
            assert not list((tmp_path / folder).glob("*.bin"))
            assert "auto_map" not in json.loads((tmp_path / folder / "config.json").read_text())
            loaded = AutoModelForMaskedLM.from_pretrained(
                tmp_path / folder, use_safetensors=True, trust_remote_code=False
            ).eval()
            assert torch.equal(loaded(**batch).logits, expected), folder
    trainer.close()
    series = read_metrics(tmp_path / "checkpoints" / METRICS_FILE)
    for folder in ("exported", "hf"):  # the model card says how it was made and how to load it
        card = (tmp_path / folder / "README.md").read_text()
        assert "| trained for | 2 batches, 16 samples, " in card
        assert (
            f"| last eval MLM loss | {series['metrics/eval/LanguageCrossEntropy'][2]:.4f}" in card
        )
        assert "mosaic-pretrain 0." in card and "import mosaic_pretrain.model" in card
        assert "--with-code" in card  # how to share it without the package
        recipe = card.split("```yaml\n")[1].split("```")[0]
        assert load_config_text(recipe, tmp_path) == config
    assert main(["export", str(checkpoint), str(tmp_path / "shared"), "--with-code"]) == 0
    shared = tmp_path / "shared"
    assert "auto_map" in json.loads((shared / "config.json").read_text())
    assert (shared / "modeling.py").is_file() and "trust_remote_code=True" in (
        shared / "README.md"
    ).read_text()
    with pytest.raises(CheckpointError, match="already exists"):
        export_checkpoint(checkpoint, tmp_path / "exported")
    broken = tmp_path / "checkpoints" / "broken.pt"
    broken.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or not a Composer checkpoint"):
        export_checkpoint(broken, tmp_path / "other")


def test_another_runs_checkpoints_are_never_overwritten_unless_asked(corpus, tmp_path):
    run(corpus, tmp_path / "first", "max_duration=2ba", "eval_interval=2ba", "save_interval=2ba")
    folder = tmp_path / "first"
    with pytest.raises(ConfigError, match=r"already holds checkpoints; set autoresume: true"):
        run(corpus, folder, "max_duration=2ba", "export_folder=null")
    run(
        corpus,
        folder,
        "max_duration=2ba",
        "eval_interval=2ba",
        "save_interval=2ba",
        "export_folder=null",
        "save_overwrite=true",
    )


@pytest.mark.slow
def test_compile_key_compiles_the_model(corpus, tmp_path):
    """With torch.compile's `eager` backend the numbers are those of the plain model."""
    common = ["max_duration=2ba", "eval_interval=2ba", "save_interval=2ba"]
    plain, _ = run(corpus, tmp_path / "plain", *common)
    compiled, _ = run(corpus, tmp_path / "compiled", *common, "compile.backend=eager")
    assert all(torch.equal(plain[name], compiled[name]) for name in plain)


def test_wandb_logs_offline_without_a_project(corpus, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run(
        corpus,
        tmp_path / "run",
        "max_duration=2ba",
        "eval_interval=2ba",
        "save_interval=2ba",
        "loggers.wandb.tags=[test]",
    )
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def _poison_loss(monkeypatch, at_batch: int, factor: float):
    """Multiply the training loss of batch `at_batch` (1-based) by `factor` (nan, inf, 100)."""
    from mosaic_pretrain.train.composer_model import MLMComposerModel
    from tests.poison_loss import poisoned_loss

    monkeypatch.setattr(MLMComposerModel, "loss", poisoned_loss(at_batch, factor))


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    import mosaic_pretrain.commands.train as run_module
    from mosaic_pretrain.callbacks.loss_guard import NumericalFault

    _poison_loss(monkeypatch, at_batch=3, factor=float("nan"))
    build_trainer, built = run_module.build_trainer, []

    def recording_build_trainer(*args):
        built.append(build_trainer(*args))
        return built[-1]

    monkeypatch.setattr(run_module, "build_trainer", recording_build_trainer)
    with pytest.raises(NumericalFault, match=r"the loss is nan while training batch 3;") as caught:
        run(corpus, tmp_path, "max_duration=6ba", "eval_interval=6ba", "save_interval=2ba")
    assert "\n" not in str(caught.value)
    # The failed run's Trainer, which the caller never gets, was closed: its data freed.
    assert shared_memory_of(built[0].trainer.state.train_dataloader.dataset)["named"] == []
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.glob("ep*.pt")) == ["ep0-ba2-rank0.pt"]
    weights = load_composer_weights(folder / "ep0-ba2-rank0.pt")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_skip_drops_a_nan_batch_without_touching_the_weights(corpus, tmp_path, monkeypatch):
    from composer.core import Callback

    snapshots = {}

    class Snapshot(Callback):
        def batch_end(self, state, logger):
            model = state.model.model
            snapshots[int(state.timestamp.batch)] = {
                k: v.detach().clone() for k, v in model.state_dict().items()
            }

    monkeypatch.setattr(
        "mosaic_pretrain.train.trainer.build_callbacks", lambda section: [Snapshot()]
    )
    _poison_loss(monkeypatch, at_batch=3, factor=float("inf"))
    weights, _ = run(
        corpus,
        tmp_path,
        "max_duration=4ba",
        "eval_interval=4ba",
        "save_interval=4ba",
        "loss_guard.action=skip",
    )
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    unchanged = [torch.equal(snapshots[2][k], snapshots[3][k]) for k in snapshots[2]]
    assert all(unchanged)  # batch 3 was dropped: no update
    assert not torch.equal(
        snapshots[3]["bert.embeddings.LayerNorm.weight"],
        snapshots[4]["bert.embeddings.LayerNorm.weight"],
    )
    series = read_metrics(tmp_path / "checkpoints" / METRICS_FILE)
    assert series["loss_guard/skipped_batches"] == {3: 1.0}


def test_a_loss_spike_past_the_threshold_stops_the_run(corpus, tmp_path, monkeypatch):
    from mosaic_pretrain.callbacks.loss_guard import NumericalFault

    _poison_loss(monkeypatch, at_batch=5, factor=100.0)
    with pytest.raises(NumericalFault, match=r"spiked to .* over 3.0 x the mean .* batch 5"):
        run(
            corpus,
            tmp_path,
            "max_duration=6ba",
            "eval_interval=6ba",
            "save_interval=2ba",
            "loss_guard.spike_factor=3.0",
            "loss_guard.window=2",
        )


def test_checkpoints_carry_the_recipe_and_code_version_and_resume_refuses_changes(corpus, tmp_path):
    from mosaic_pretrain.train.resume import read_record

    first = ["max_duration=2ba", "eval_interval=2ba", "save_interval=2ba"]
    run(corpus, tmp_path, *first)
    checkpoint = tmp_path / "checkpoints" / "ep0-ba2-rank0.pt"
    record = read_record(checkpoint)
    assert record["recipe"]["optimizer"]["lr"] == 1.0e-3
    assert record["recipe"]["precision"] == "fp32"
    assert record["code_version"].startswith("0.1.0")

    resume = [
        "max_duration=3ba",
        "eval_interval=3ba",
        "save_interval=3ba",
        "autoresume=true",
        "export_folder=null",
    ]
    with pytest.raises(
        ConfigError,
        match=r"changes optimizer.lr, seed .*"
        r"resume_allow_changes=\[optimizer.lr,seed\]",
    ):
        run(corpus, tmp_path, *resume, "optimizer.lr=5e-4", "seed=3")
    with pytest.raises(
        ConfigError,
        match=r"cannot resume .* different "
        r"model.model_config.hidden_size",
    ):
        run(
            corpus,
            tmp_path,
            *resume,
            "model.model_config.hidden_size=128",
            "resume_allow_changes=[model.model_config.hidden_size]",
        )
    with pytest.raises(ConfigError, match=r"resume_allow_changes: 'lr' is not a recipe key"):
        run(corpus, tmp_path, *resume, "resume_allow_changes=[lr]")
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("ep*.pt")) == [checkpoint.name]

    # Asked for by name, and operational keys (duration, intervals): the run continues.
    run(corpus, tmp_path, *resume, "optimizer.lr=5e-4", "resume_allow_changes=[optimizer.lr]")
    assert (tmp_path / "checkpoints" / "ep0-ba3-rank0.pt").exists()


def test_expanded_activation_trains_logs_its_gate_ranges_and_exports_them(corpus, tmp_path):
    from transformers import AutoModelForMaskedLM

    from mosaic_pretrain.model.activations import gate_range_parameters

    weights, _ = run(
        corpus,
        tmp_path,
        "max_duration=3ba",
        "eval_interval=3ba",
        "save_interval=3ba",
        "model.model_config.ffn_activation=xatglu",
        "model.model_config.ffn_param_matched=true",
        "callbacks.gate_range_monitor.batch_log_interval=1",
    )
    trained = {name: value for name, value in weights.items() if name.endswith("gate_range")}
    assert len(trained) == 1 and all(value.item() != 0.0 for value in trained.values())
    series = read_metrics(tmp_path / "checkpoints" / METRICS_FILE)
    assert sorted(series["gate_range/mean"]) == [0, 1, 2, 3]  # at the start, then per batch
    assert series["gate_range/mean"][0] == 0.0
    assert series["gate_range/mean"][3] == pytest.approx(next(iter(trained.values())).item())
    assert series["gate_range/std"][3] == 0.0  # one block
    exported = AutoModelForMaskedLM.from_pretrained(tmp_path / "hf")
    assert [value.item() for value in gate_range_parameters(exported).values()] == [
        value.item() for value in trained.values()
    ]
