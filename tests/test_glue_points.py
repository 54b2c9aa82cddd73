"""GLUE during pretraining (callbacks.glue_sweep) on CPU: a tiny pretraining run swept at two
points on the SST-2 stand-in, a killed sweep retried by rerunning, the three places sweeps run,
and bad recipes refused before training."""

import gc
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from composer.core import Callback

from mosaic_pretrain.callbacks.metrics_file import METRICS_FILE
from mosaic_pretrain.cli import main
from mosaic_pretrain.commands.check import check_recipe
from mosaic_pretrain.commands.train import train
from mosaic_pretrain.config import load_config
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.glue import point_queue
from mosaic_pretrain.glue.job import JOBS_FOLDER, LOG_FILE
from mosaic_pretrain.glue.point_queue import SweepMode, SweepQueue
from mosaic_pretrain.glue.point_sweep import (
    PointOutcome,
    PointSweepSettings,
    check_gpus,
    sweep_point,
)
from mosaic_pretrain.glue.points import (
    POINTS_FOLDER,
    RESULTS_FILE,
    Clock,
    Point,
    read_results,
)
from mosaic_pretrain.glue.pretraining_points import GlueSweeps
from mosaic_pretrain.glue.sweep import PID_FILE, Placement, Scheduler, SweepOutcome, SweepStopped
from mosaic_pretrain.train.resume import read_checkpoint_state
from tests.glue_helpers import STANDINS

pytestmark = pytest.mark.slow  # end-to-end runs; `pytest -m 'not slow'` skips them

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"
SWEEP = {  # one quick job per point: SST-2 stand-in, one seed, small subsets, on the CPU
    "tasks": ["sst2"],
    "data": {"source": "local", "local": str(STANDINS)},
    "task_settings": {
        "sst2": {
            "seeds": [19],
            "epochs": 1,
            "batch_size": 16,
            "max_train_examples": 32,
            "max_eval_examples": 32,
            "eval_interval": "1ep",
        }
    },
    "max_seq_len": 64,
    "eval_batch_size": 32,
    "parallel": {"device": "cpu", "workers": 1},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tmp_path_factory.mktemp("data") / "public-domain-en"


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "sweep.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    return path


def recipe(corpus, folder: Path, sweep_file: Path, *overrides: str):
    return load_config(
        SMOKE,
        [
            "model.model_config.num_hidden_layers=1",
            "global_train_batch_size=8",
            "device_train_microbatch_size=8",
            "log_to_console=false",
            "autoresume=false",  # a new run each time (the smoke recipe continues its own)
            "eval_loader=null",
            "callbacks.speed_monitor=null",
            "callbacks.optimizer_monitor=null",
            f"data_local={corpus}",
            f"save_folder={folder}/checkpoints",
            "export_folder=null",
            f"callbacks.glue_sweep.sweep={sweep_file}",
            *overrides,
        ],
    )


def pretrain(corpus, folder: Path, sweep_file: Path, *overrides: str) -> dict[str, str]:
    """Train; returns the callback's failed points."""
    trainer = train(recipe(corpus, folder, sweep_file, *overrides))
    (glue,) = [cb for cb in trainer.state.callbacks if isinstance(cb, GlueSweeps)]
    failed = dict(glue.failed)
    trainer.close()
    del trainer
    gc.collect()
    return failed


def glue_rows(run: Path) -> list[dict]:
    lines = (run / METRICS_FILE).read_text().splitlines()
    return [row for row in map(json.loads, lines) if any(k.startswith("glue/") for k in row)]


def job_starts(point_folder: Path) -> int:
    log = point_folder / "sweep" / JOBS_FOLDER / "sst2-seed19" / LOG_FILE
    return sum(line.startswith("=== ") for line in log.read_text().splitlines())


def test_two_points_are_swept_and_logged_against_the_clock_and_a_rerun_adds_nothing(
    corpus, sweep_file, tmp_path, monkeypatch
):
    wandb = pytest.importorskip("wandb")
    wandb.teardown()  # a W&B session of an earlier test would keep its WANDB_DIR
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "checkpoints"
    points = run / POINTS_FOLDER
    # Checkpoints every batch, keep one: the batch-2 checkpoint is rotated away before its
    # sweep runs (after training, as on one device); the point keeps a copy of its own.
    common = [
        "max_duration=4ba",
        "save_interval=1ba",
        "save_num_checkpoints_to_keep=1",
        "callbacks.glue_sweep.interval=2ba",
        "callbacks.glue_sweep.retries=0",
    ]
    pid_file = points / "ba4" / "sweep" / JOBS_FOLDER / "sst2-seed19" / PID_FILE

    def kill_ba4_job():
        deadline = time.time() + 120
        while not pid_file.exists() and time.time() < deadline:
            time.sleep(0.02)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_ba4_job)
    killer.start()
    try:
        failed = pretrain(corpus, tmp_path, sweep_file, *common, "loggers.wandb.tags=[test]")
    finally:
        killer.join()
        wandb.teardown()  # so the next W&B run reads its environment afresh

    assert sorted(p.name for p in run.glob("ep*-ba*-rank0.pt")) == ["ep0-ba4-rank0.pt"]
    results = read_results(points)
    assert results["ba2"]["status"] == "ok" and results["ba4"]["status"] == "failed"
    assert "1 of 1 jobs failed (sst2-seed19)" in results["ba4"]["error"]
    assert list(failed) == ["ba4"]
    assert not (points / "ba2" / "weights").exists()  # its sweep finished: deleted
    assert (points / "ba4" / "weights" / "config.json").exists()  # kept for the rerun
    rows = glue_rows(run)
    logged = [(r["glue/clock/batches"], "glue/sweep_failed" in r) for r in rows]
    assert logged == [(2, False), (4, True)] and "glue/average" in rows[0]
    history = b"".join(path.read_bytes() for path in tmp_path.glob("wandb/offline-run-*/*.wandb"))
    assert b"glue/average" in history and b"glue/clock/wall_hours" in history

    # Rerun: training is complete, the failed point is swept again, nothing else is repeated.
    assert pretrain(corpus, tmp_path, sweep_file, *common, "autoresume=true") == {}
    results = read_results(points)
    assert {name: row["status"] for name, row in results.items()} == {"ba2": "ok", "ba4": "ok"}
    lines = [json.loads(line) for line in (points / RESULTS_FILE).read_text().splitlines()]
    assert [(row["point"], row["status"]) for row in lines] == [
        ("ba2", "ok"),
        ("ba4", "failed"),
        ("ba4", "ok"),
    ]
    assert job_starts(points / "ba2") == 1 and job_starts(points / "ba4") == 2
    averages = [r for r in glue_rows(run) if "glue/average" in r]
    assert [r["glue/clock/batches"] for r in averages] == [2, 4]
    for row in averages:
        assert row["glue/average"] == row["glue/sst2"] and 0 <= row["glue/average"] <= 100

    # Clocks: batches, samples, real tokens strictly increasing; wall hours too.
    clocks = [results[name]["clock"] for name in ("ba2", "ba4")]
    for key in ("batches", "samples", "tokens", "wall_hours"):
        assert clocks[0][key] < clocks[1][key], key
    assert [c["samples"] for c in clocks] == [16, 32]
    assert all(c["gpu_hours"] == c["wall_hours"] and c["cost"] is None for c in clocks)
    assert averages[1]["glue/clock/tokens"] == clocks[1]["tokens"]

    # The pareto command draws the run.
    out = tmp_path / "pareto"
    assert main(["pareto", str(run), "--out", str(out), "--x", "tokens"]) == 0
    csv_rows = (out / "pareto-glue_average-tokens.csv").read_text().splitlines()
    assert len(csv_rows) == 3 and (out / "pareto-glue_average-tokens.png").stat().st_size > 5000


def fake_sweep(pause_s: float, started: list | None = None):
    """A sweep that takes `pause_s` and scores 50 + the point's batch."""

    def sweep(settings, point: Point, should_stop) -> PointOutcome:
        if started is not None:
            started.append(time.monotonic())
        time.sleep(pause_s)
        value = 50.0 + point.clock.batches
        report = {
            "tasks": {"sst2": {"glue": True, "score": {"mean": value, "std": 1.0, "n": 2}}},
            "glue_average": {"value": value, "tasks": ["sst2"]},
        }
        if started is not None:
            started.append(time.monotonic())
        return PointOutcome(point, report, None, 1)

    return sweep


def test_waiting_for_sweeps_pauses_training_and_the_wait_is_not_in_the_clock(
    corpus, sweep_file, tmp_path, monkeypatch
):
    pause = 1.5
    monkeypatch.setattr("mosaic_pretrain.glue.pretraining_points.sweep_point", fake_sweep(pause))
    config = recipe(
        corpus,
        tmp_path,
        sweep_file,
        "max_duration=3ba",
        "save_interval=3ba",
        "callbacks.glue_sweep.interval=1ba",
        "callbacks.glue_sweep.wait_for_sweeps=true",
        "callbacks.glue_sweep.gpu_hour_price=2.5",
    )
    trainer = train(config)
    total_s = trainer.state.timestamp.total_wct.total_seconds()
    trainer.close()
    run = tmp_path / "checkpoints"
    rows = glue_rows(run)
    # Each result is logged at its own batch: training waited for it.
    assert [(r["step"], r["glue/clock/batches"], r["glue/average"]) for r in rows] == [
        (1, 1, 51.0),
        (2, 2, 52.0),
        (3, 3, 53.0),
    ]
    # Composer's clock includes the waits at batches 1 and 2; the points' clocks do not.
    wall_s = rows[-1]["glue/clock/wall_hours"] * 3600
    assert total_s > 2 * pause and wall_s <= total_s - 2 * pause + 1e-6
    assert rows[-1]["glue/clock/cost"] == pytest.approx(rows[-1]["glue/clock/gpu_hours"] * 2.5)
    saved = read_checkpoint_state(run / "ep0-ba3-rank0.pt")["state"]["callbacks"]["GlueSweeps"]
    assert saved["paused_s"] >= 2 * pause and sorted(saved["points"]) == ["ba1", "ba2", "ba3"]


class BatchTimes(Callback):
    def __init__(self):
        self.times: list[float] = []

    def batch_end(self, state, logger):
        self.times.append(time.monotonic())


def test_background_sweeps_run_while_training_goes_on(corpus, sweep_file, tmp_path, monkeypatch):
    """As on GPUs set aside (here the sweep is a stand-in that takes 2 s, on the CPU)."""
    sweep_times: list[float] = []
    batch_times = BatchTimes()
    monkeypatch.setattr(point_queue, "sweep_mode", lambda gpus, wait: SweepMode.background)
    monkeypatch.setattr(
        "mosaic_pretrain.glue.pretraining_points.sweep_point", fake_sweep(2.0, sweep_times)
    )
    monkeypatch.setattr(
        "mosaic_pretrain.train.trainer.build_callbacks", lambda section: [batch_times]
    )
    config = recipe(
        corpus,
        tmp_path,
        sweep_file,
        "max_duration=6ba",
        "save_interval=6ba",
        "callbacks.glue_sweep.interval=2ba",
    )
    train(config).close()
    rows = glue_rows(tmp_path / "checkpoints")
    assert [r["glue/clock/batches"] for r in rows] == [2, 4, 6]
    assert rows[0]["step"] > 2  # logged at a later batch end (or after training)
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})  # one per step
    first_start, first_end = sweep_times[0], sweep_times[1]
    assert any(first_start < t < first_end for t in batch_times.times)  # training went on


def test_a_sweep_is_retried_and_stops_on_request(tmp_path, monkeypatch):
    point = Point("ba2", tmp_path / "ba2", Clock(2, 16, 2048, 0.1, 1, 0.1, None))
    settings = PointSweepSettings("s.yaml", (), (), 2, "run")
    monkeypatch.setattr(
        "mosaic_pretrain.glue.point_sweep.load_point_sweep", lambda settings, point: None
    )
    calls = []

    def glue(config, report_only, should_stop):
        calls.append(1)
        outcome = SweepOutcome(tmp_path, jobs=[object()])
        if len(calls) < 3:
            outcome.failed["sst2-seed19"] = "killed by signal 9"
            return outcome, {}, ""
        return outcome, {"tasks": {}}, "table"

    monkeypatch.setattr("mosaic_pretrain.glue.point_sweep.glue", glue)
    outcome = sweep_point(settings, point, lambda: False)
    assert outcome.report == {"tasks": {}} and outcome.attempts == 3 and len(calls) == 3

    calls.clear()
    failed = sweep_point(PointSweepSettings("s.yaml", (), (), 1, "run"), point, lambda: False)
    assert failed.report is None and failed.attempts == 2
    assert failed.error.startswith("1 of 1 jobs failed (sst2-seed19)")

    def stopped(config, report_only, should_stop):
        raise SweepStopped("stopped")

    monkeypatch.setattr("mosaic_pretrain.glue.point_sweep.glue", stopped)
    assert sweep_point(settings, point, lambda: False).stopped

    # The scheduler stops its running jobs and raises when asked to stop.
    jobs_started = []

    def start(job, gpu):
        jobs_started.append(subprocess.Popen(["sleep", "30"], start_new_session=True))
        return jobs_started[-1]

    placement = Placement("cpu", [None], 1)
    scheduler = Scheduler(tmp_path, placement, SweepOutcome(tmp_path, []), lambda: bool(calls))
    monkeypatch.setattr(scheduler, "_start", start)
    calls.clear()
    threading.Timer(0.3, lambda: calls.append(1)).start()
    job = SimpleNamespace(name="sst2-seed19", start_job=None)
    with pytest.raises(SweepStopped):
        scheduler.run([job], set())
    assert jobs_started[0].wait(timeout=5) == -signal.SIGTERM

    # A background queue: stop() stops the running sweep and leaves its point pending.
    release = threading.Event()

    def waits(point, should_stop):
        while not should_stop():
            release.wait(0.01)
        return PointOutcome(point, None, None, 1, stopped=True)

    queue = SweepQueue(SweepMode.background, waits, lambda: False)
    queue.submit(point)
    time.sleep(0.1)
    queue.stop()
    assert queue.pending() == [point] and queue.take_done() == []


def test_bad_glue_sweep_recipes_are_refused_before_training(corpus, sweep_file, tmp_path):
    def problems(*overrides, world_size=1):
        try:
            config = load_config(
                SMOKE,
                [
                    f"callbacks.glue_sweep.sweep={sweep_file}",
                    f"save_folder={tmp_path}/run",
                    f"data_local={corpus}",
                    "export_folder=null",
                    "autoresume=false",
                    *overrides,
                ],
                world_size=world_size,
            )
        except ConfigError as error:
            return error.problems
        return [p for p in check_recipe(config) if "glue" in p]

    assert problems() == []
    assert problems("callbacks.glue_sweep.interval=1ep") == [
        "callbacks.glue_sweep.interval=1ep: write it in ba, sp, tok, e.g. 10ba (points are "
        "taken at batch ends)"
    ]
    assert problems("callbacks.glue_sweep.at_end=false") == [
        "callbacks.glue_sweep: set interval (e.g. 2000ba) or at_end: true, or no point is taken"
    ]
    assert "callbacks.glue_sweep.retries=-1 is out of range: it must be in [0, 100]" in problems(
        "callbacks.glue_sweep.retries=-1"
    )
    assert any(
        "with 2 processes the sweeps need GPUs of their own" in p
        for p in problems("global_train_batch_size=64", world_size=2)
    )
    missing = problems(f"callbacks.glue_sweep.sweep={tmp_path}/nope.yaml")
    assert len(missing) == 1 and missing[0].startswith(f"callbacks.glue_sweep.sweep {tmp_path}")
    assert "does not exist" in missing[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SWEEP, "tasks": ["sst5"]}))
    assert any("unknown task 'sst5'" in p for p in problems(f"callbacks.glue_sweep.sweep={bad}"))
    empty = tmp_path / "empty"
    empty.mkdir()
    unreadable = problems("callbacks.glue_sweep.sweep_overrides=[data.local=" + str(empty) + "]")
    assert len(unreadable) == 1 and "task sst2: no folder" in unreadable[0]
    if torch.cuda.device_count() == 0:
        assert problems("callbacks.glue_sweep.gpus=[0]") == [
            "callbacks.glue_sweep.gpus sets GPUs aside, but the sweep says parallel.device=cpu",
            "callbacks.glue_sweep.gpus=[0]: no GPU is visible; leave gpus empty to sweep after "
            "training",
        ]
    with pytest.raises(ConfigError, match=r"GPU \[0\] trains this run .* e.g. \[2, 3\]"):
        check_gpus([0, 2], gpu_count=4, local_world_size=2)
    with pytest.raises(ConfigError, match=r"gpus=\[4\]: choose ids among 0..3"):
        check_gpus([4], gpu_count=4, local_world_size=1)
    check_gpus([2, 3], gpu_count=4, local_world_size=2)

    # Points of an earlier run in the folder: refused unless the run continues.
    (tmp_path / "run" / POINTS_FOLDER / "ba2").mkdir(parents=True)
    (tmp_path / "run" / POINTS_FOLDER / "ba2" / "clock.json").write_text(
        json.dumps(asdict(Clock(2, 16, 2048, 0.1, 1, 0.1, None)))
    )
    assert any("holds GLUE points of an earlier run" in p for p in problems())
    assert not any("earlier run" in p for p in problems("autoresume=true"))

    # From the command line: one problem per line, exit code 2.
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(SMOKE.read_text())
    overrides = [f"callbacks.glue_sweep.sweep={bad}", f"data_local={corpus}"]
    assert main(["check", str(recipe_file), *overrides]) == 2
