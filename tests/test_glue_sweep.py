"""GLUE sweeps end to end on CPU: a tiny model pretrained for two steps, finetuned on the
GLUE-layout stand-ins with two seeds and two parallel workers; MNLI-start chaining, resume, a
killed job, the Hugging Face baseline, and bad input refused before any job starts."""

import gc
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from mosaic_pretrain.cli import main
from mosaic_pretrain.commands.train import train
from mosaic_pretrain.config import load_config
from mosaic_pretrain.errors import CheckpointError, ConfigError, DataError
from mosaic_pretrain.glue.config import load_sweep
from mosaic_pretrain.glue.job import ENCODER_FOLDER, JOBS_FOLDER, LOG_FILE, RESULT_FILE
from mosaic_pretrain.glue.report import REPORT_CSV, REPORT_JSON, REPORT_PNG
from mosaic_pretrain.glue.start import load_classifier, save_encoder
from mosaic_pretrain.glue.sweep import PID_FILE, glue
from mosaic_pretrain.train.export import RESOLVED_CONFIG
from tests.glue_helpers import STANDINS, write_glue_layouts, write_tsv

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"
QUICK_TASK = {
    "epochs": 1,
    "batch_size": 16,
    "max_train_examples": 48,
    "max_eval_examples": 40,
    "eval_interval": "2ba",
}


def pretrain(folder: Path, *overrides: str) -> Path:
    """Two steps of the smoke recipe with a one-layer model; returns the save folder."""
    config = load_config(
        SMOKE,
        [
            "model.model_config.num_hidden_layers=1",
            "global_train_batch_size=8",
            "device_train_microbatch_size=8",
            "max_duration=2ba",
            "eval_interval=2ba",
            "save_interval=2ba",
            "log_to_console=false",
            "eval_loader=null",
            f"data_local={folder.parent / 'corpus'}",
            f"save_folder={folder}/checkpoints",
            f"export_folder={folder}/hf",
            *overrides,
        ],
    )
    trainer = train(config)
    trainer.close()
    del trainer
    gc.collect()
    return folder / "checkpoints"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return pretrain(tmp_path_factory.mktemp("pretrain") / "mosaic")


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    root = write_glue_layouts(tmp_path_factory.mktemp("glue"))
    shutil.copytree(STANDINS / "VADER", root / "VADER")
    return root


def write_sweep(path: Path, starting_point, glue_root, tasks, seeds=(1, 2), **extra) -> Path:
    settings = {task: {**QUICK_TASK, "seeds": list(seeds)} for task in tasks if task != "mnli"}
    settings["mnli"] = {**QUICK_TASK, "eval_interval": "1ep"}
    sweep = {
        "run_name": "test",
        "starting_point": str(starting_point),
        "output_folder": str(path.parent / "out"),
        "tasks": list(tasks),
        "data": {"source": "local", "local": str(glue_root)},
        "custom_tasks": {
            "vader": {"folder": "VADER", "text_columns": ["sentence"], "label_column": "score"}
        },
        "task_settings": {task: settings[task] for task in tasks},
        "max_seq_len": 64,
        "eval_batch_size": 32,
        "parallel": {"workers": 2, "device": "cpu"},
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.mark.slow
def test_a_sweep_finetunes_every_task_and_seed_in_parallel_and_reports(
    pretrained, glue_root, tmp_path
):
    sweep_file = write_sweep(tmp_path / "sweep.yaml", pretrained, glue_root, TASKS)
    outcome, report, table = glue(load_sweep(sweep_file))
    folder = outcome.folder
    assert outcome.failed == {} and len(outcome.ran) == 7 and outcome.skipped == []

    # Every task and metric, two seeds each (MNLI one, as published), GLUE average of GLUE tasks.
    tasks = report["tasks"]
    assert {name: sorted(entry["metrics"]) for name, entry in tasks.items()} == {
        "mnli": ["accuracy_m", "accuracy_mm"],
        "sst2": ["accuracy"],
        "mrpc": ["accuracy", "f1"],
        "vader": ["pearson", "spearman"],
    }
    assert [tasks[name]["score"]["n"] for name in TASKS] == [1, 2, 2, 2]
    glue_tasks = ["mnli", "sst2", "mrpc"]
    assert report["glue_average"]["tasks"] == glue_tasks
    assert report["glue_average"]["value"] == pytest.approx(
        sum(tasks[name]["score"]["mean"] for name in glue_tasks) / 3
    )
    assert not tasks["vader"]["glue"]
    for name in ("sst2", "mrpc"):
        assert 0 <= tasks[name]["metrics"]["accuracy"]["mean"] <= 100

    # A job's reported score is its last evaluation, x100; the std is over seeds (n - 1).
    mrpc = [
        json.loads((folder / JOBS_FOLDER / f"mrpc-seed{s}" / RESULT_FILE).read_text())
        for s in (1, 2)
    ]
    last = [r["evaluations"][-1] for r in mrpc]
    assert all(e["batch"] == r["batches"] == 3 for e, r in zip(last, mrpc, strict=True))
    f1 = [100 * e["metrics"]["f1"] for e in last]
    assert tasks["mrpc"]["metrics"]["f1"]["values"] == pytest.approx(f1)
    assert tasks["mrpc"]["metrics"]["f1"]["std"] == pytest.approx(abs(f1[0] - f1[1]) / 2**0.5)
    assert [e["batch"] for e in mrpc[0]["evaluations"]] == [2, 3]  # every 2 batches and the end
    assert "GLUE average (over mnli, sst2, mrpc, x100)" in table
    assert (folder / REPORT_JSON).exists() and (folder / REPORT_PNG).stat().st_size > 5000
    csv_rows = (folder / REPORT_CSV).read_text().splitlines()
    assert csv_rows[0] == "task,metric,mean,std,n,values" and csv_rows[-1].startswith(
        "glue_average"
    )

    # MRPC started from the encoder MNLI finetuned, the others from the pretrained export.
    specs = {job.name: job for job in outcome.jobs}
    assert specs["mrpc-seed1"].start_job == specs["mrpc-seed2"].start_job == "mnli-seed19"
    assert specs["sst2-seed1"].start_job is None and specs["mnli-seed19"].save_encoder
    encoder = folder / JOBS_FOLDER / "mnli-seed19" / ENCODER_FOLDER
    assert (encoder / "config.json").exists()
    assert (
        f"from {encoder}; new: classifier"
        in (folder / JOBS_FOLDER / "mrpc-seed1" / LOG_FILE).read_text()
    )
    assert "new: classifier, pooler" in (folder / JOBS_FOLDER / "sst2-seed1" / LOG_FILE).read_text()

    # Two workers: the second job started before the first one finished.
    def started(name):
        return (folder / JOBS_FOLDER / name / PID_FILE).stat().st_mtime

    def finished(name):
        return (folder / JOBS_FOLDER / name / RESULT_FILE).stat().st_mtime

    first, second = outcome.ran[0], outcome.ran[1]
    assert started(second) < finished(first) or started(first) < finished(second)

    # A rerun skips every finished job; other settings for a finished job are refused.
    again, report_again, _ = glue(load_sweep(sweep_file))
    assert again.ran == [] and len(again.skipped) == 7
    assert report_again["glue_average"] == report["glue_average"]
    with pytest.raises(ConfigError, match=r"other settings: sst2-seed1 \(hyperparameters.lr\)"):
        glue(load_sweep(sweep_file, ["task_settings.sst2.lr=1e-3"]))

    # `best` picks, per job, the evaluation with the best primary metric.
    _, best, _ = glue(load_sweep(sweep_file, ["score_policy=best"]), report_only=True)
    for name in ("sst2", "mrpc"):
        assert (
            best["tasks"][name]["metrics"]["accuracy"]["mean"]
            >= (tasks[name]["metrics"]["accuracy"]["mean"])
        )


TASKS = ("mnli", "sst2", "mrpc", "vader")


@pytest.mark.slow
def test_a_killed_job_is_reported_the_others_finish_and_a_rerun_completes(
    pretrained, glue_root, tmp_path
):
    sweep_file = write_sweep(
        tmp_path / "sweep.yaml", pretrained, glue_root, ("mnli", "mrpc", "sst2"), seeds=(1,)
    )
    pid_file = tmp_path / "out" / JOBS_FOLDER / "mnli-seed19" / PID_FILE

    def kill_mnli():
        deadline = time.time() + 120
        while not pid_file.exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_mnli)
    killer.start()
    outcome, report, table = glue(load_sweep(sweep_file))
    killer.join()
    assert outcome.failed["mnli-seed19"].startswith("killed by signal 9")
    assert outcome.failed["mrpc-seed1"] == "not run: mnli-seed19, its start, failed"
    assert sorted(outcome.failed) == ["mnli-seed19", "mrpc-seed1"]
    assert report["tasks"]["sst2"]["score"]["n"] == 1 and "FAILED mnli-seed19" in table
    assert report["tasks"]["mrpc"]["missing"] == [1]

    rerun, report, _ = glue(load_sweep(sweep_file))
    assert sorted(rerun.ran) == ["mnli-seed19", "mrpc-seed1"] and rerun.skipped == ["sst2-seed1"]
    assert rerun.failed == {} and report["glue_average"]["tasks"] == ["mnli", "mrpc", "sst2"]


@pytest.mark.slow
def test_the_hugging_face_bert_baseline_finetunes_too(glue_root, tmp_path):
    checkpoints = pretrain(tmp_path / "baseline", "model.name=hf_bert")
    sweep_file = write_sweep(tmp_path / "sweep" / "s.yaml", checkpoints, glue_root, ["sst2"], (1,))
    outcome, report, _ = glue(load_sweep(sweep_file))
    assert outcome.failed == {} and report["tasks"]["sst2"]["score"]["n"] == 1
    log = (outcome.folder / JOBS_FOLDER / "sst2-seed1" / LOG_FILE).read_text()
    assert "BertForSequenceClassification from" in log


def test_an_encoder_reloads_exactly_under_a_new_head(pretrained, tmp_path):
    start = str(pretrained.parent / "hf")
    model = load_classifier(start, num_labels=3, regression=False)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)  # as if finetuned
    save_encoder(model, _tokenizer(), tmp_path / "encoder")
    reloaded = load_classifier(str(tmp_path / "encoder"), num_labels=1, regression=True)
    before, after = model.state_dict(), reloaded.state_dict()
    encoder_keys = [key for key in before if not key.startswith("classifier.")]
    assert all(torch.equal(before[key], after[key]) for key in encoder_keys)
    assert after["classifier.weight"].shape == (1, model.config.hidden_size)
    assert reloaded.config.problem_type == "regression"


def _tokenizer():
    from mosaic_pretrain.data.tokenizer import load_tokenizer

    return load_tokenizer("bert-base-uncased")


def test_bad_input_is_refused_before_any_job_starts(pretrained, glue_root, tmp_path):
    def refused(error, message, starting_point=pretrained, root=glue_root, tasks=("sst2",), **kw):
        sweep_file = write_sweep(tmp_path / "s.yaml", starting_point, root, tasks, (1,), **kw)
        with pytest.raises(error, match=message) as caught:
            glue(load_sweep(sweep_file))
        assert "\n" not in str(caught.value)
        assert not (tmp_path / "out" / JOBS_FOLDER).exists()

    # A label outside the task's label set, a missing task folder, a missing column.
    bad_root = tmp_path / "bad"
    shutil.copytree(glue_root / "SST-2", bad_root / "SST-2")
    lines = (bad_root / "SST-2" / "dev.tsv").read_text().splitlines()
    lines[5] = lines[5].rsplit("\t", 1)[0] + "\tpositive"
    (bad_root / "SST-2" / "dev.tsv").write_text("\n".join(lines) + "\n")
    refused(
        DataError, r"dev.tsv:6: label 'positive' is not one of task sst2's labels", root=bad_root
    )
    refused(DataError, r"task mnli: no folder .*MNLI", root=bad_root, tasks=("mnli",))
    write_tsv(bad_root / "VADER" / "train.tsv", ["text", "score"], [["a", "1.0"]])
    refused(DataError, r"train.tsv has no column 'sentence'", root=bad_root, tasks=("vader",))

    # A checkpoint that does not match its model config (recipe or config.json).
    recipe = yaml.safe_load((pretrained / RESOLVED_CONFIG).read_text())
    recipe["model"]["model_config"]["hidden_size"] = 64
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(recipe))
    refused(CheckpointError, r"does not match the model of", recipe=str(tmp_path / "other.yaml"))
    assert not (tmp_path / "out").exists()  # made for the sweep's lock, left empty: removed
    hf = tmp_path / "hf"
    shutil.copytree(pretrained.parent / "hf", hf)
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    refused(CheckpointError, r"weights in .*hf do not match its model config", starting_point=hf)
    refused(CheckpointError, r"starting_point ./nowhere.pt does not exist", "./nowhere.pt")

    # From the command line: exit code 2 and one line.
    sweep_file = write_sweep(tmp_path / "s.yaml", "./nowhere.pt", glue_root, ("sst2",), (1,))
    assert main(["glue", str(sweep_file)]) == 2
    assert main(["glue", str(sweep_file), "tasks=[sst5]"]) == 2


def test_jobs_go_one_per_gpu_or_share_the_cpu(monkeypatch, tmp_path):
    from mosaic_pretrain.glue import sweep as sweep_module

    base = write_sweep(tmp_path / "s.yaml", "x.pt", tmp_path, ("sst2",), (1,))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    cpu = sweep_module.place_jobs(load_sweep(base, ["parallel.device=auto"]))
    assert cpu.device == "cpu" and cpu.gpus == [None, None]
    assert cpu.threads == max(1, (os.cpu_count() or 1) // 2)
    with pytest.raises(ConfigError, match=r"parallel.device=gpu, but no GPU is visible"):
        sweep_module.place_jobs(load_sweep(base, ["parallel.device=gpu"]))

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    auto = load_sweep(base, ["parallel.device=auto", "parallel.workers=null"])
    assert sweep_module.place_jobs(auto).gpus == [0, 1, 2, 3]
    chosen = load_sweep(base, ["parallel.device=gpu", "parallel.gpus=[2,3]", "parallel.workers=4"])
    placement = sweep_module.place_jobs(chosen)
    assert placement.device == "gpu" and placement.gpus == [2, 3, 2, 3]
    with pytest.raises(ConfigError, match=r"parallel.gpus=\[7\]: choose ids among 0..3"):
        sweep_module.place_jobs(load_sweep(base, ["parallel.device=gpu", "parallel.gpus=[7]"]))

    # Each job process sees only its GPU.
    launched = []

    class FakeProcess:
        pid = 12345

        def __init__(self, command, env, **_):
            launched.append(env["CUDA_VISIBLE_DEVICES"])

    monkeypatch.setattr(sweep_module.subprocess, "Popen", FakeProcess)
    jobs = sweep_module.plan_jobs(chosen, "start", {}, placement)
    outcome = sweep_module.SweepOutcome(tmp_path, jobs)
    scheduler = sweep_module.Scheduler(tmp_path / "out", placement, outcome)
    scheduler._start(jobs[0], 3)
    assert launched == ["3"] and jobs[0].precision == "amp_bf16" and jobs[0].device == "gpu"


def test_check_reports_every_sweep_problem_at_once(pretrained, glue_root, tmp_path, capsys):
    good = write_sweep(tmp_path / "good.yaml", pretrained, glue_root, ("sst2", "vader"), (1,))
    assert main(["check", str(good)]) == 0
    assert not (tmp_path / "out").exists()  # checking writes nothing into the sweep folder

    bad_root = tmp_path / "bad"
    shutil.copytree(glue_root / "SST-2", bad_root / "SST-2")
    lines = (bad_root / "SST-2" / "train.tsv").read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tmaybe"
    (bad_root / "SST-2" / "train.tsv").write_text("\n".join(lines) + "\n")
    bad = write_sweep(tmp_path / "bad.yaml", "./nowhere.pt", bad_root, ("sst2", "vader"), (1,))
    capsys.readouterr()
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len([line for line in err if line.startswith("problem: ")]) == 3
    assert any("train.tsv:3: label 'maybe'" in line for line in err)
    assert any("task vader: no folder" in line for line in err)
    assert any("starting_point ./nowhere.pt does not exist" in line for line in err)
