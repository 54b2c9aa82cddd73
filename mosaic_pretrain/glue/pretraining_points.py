"""GLUE during pretraining: at each point (every `interval` of batches, samples or tokens, and at
the end of training) the model's weights are copied to RUN/glue_points/POINT/ (see
`mosaic_pretrain.glue.points`) and finetuned with the recipe's GLUE sweep; each result is logged
against the pretraining clock and appended to RUN/glue_points/results.jsonl.

Logged keys, one row per point when its sweep has finished (rank 0):

| key | value |
|---|---|
| `glue/average` | GLUE average (x100) over the GLUE tasks of the sweep; absent if it has none |
| `glue/TASK`, `glue/TASK_std` | a task's score: mean over its seeds, and their sample std (x100) |
| `glue/sweep_failed` | 1 when the sweep still failed after its retries (no scores then) |
| `glue/clock/batches`, `glue/clock/samples`, `glue/clock/tokens` | the point (real tokens) |
| `glue/clock/wall_hours` | training wall clock there, less the time training waited for sweeps |
| `glue/clock/gpu_hours` | wall_hours x training devices |
| `glue/clock/cost` | gpu_hours x gpu_hour_price, when a price is set |

Rows are logged at the current batch, at most one per batch while training goes on (W&B keeps one
value per key and step); results that arrive after training take the steps after the last batch.
Under W&B, `glue/*` is plotted against `glue/clock/batches`.

Where sweeps run (`SweepMode`): in a background thread on GPUs set aside while training goes on;
at the point, with training waiting (`wait_for_sweeps`); or after training (the default on one
device). Training ends with `finish()`, which `train` calls after `fit()`: it takes the final
point and waits for (or runs) the sweeps still to do. It runs outside `fit()` so that the other
ranks of a several-GPU run are not left waiting at a collective.

Resume: `state_dict` holds the points taken and the seconds training waited for sweeps. On a
resume, every point on disk without a finished sweep is swept again (its finished jobs are
kept), a point with an `ok` row is never swept or logged again, and a point whose copy is gone is
reported, never skipped in silence.
"""

import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import dist
from composer.utils.misc import create_interval_scheduler
from transformers import PreTrainedTokenizerBase

from mosaic_pretrain.config.folders import run_folder
from mosaic_pretrain.config.schema import PretrainConfig
from mosaic_pretrain.glue import point_queue
from mosaic_pretrain.glue.point_queue import Sweep, SweepMode, SweepQueue
from mosaic_pretrain.glue.point_sweep import (
    PointOutcome,
    PointSweepSettings,
    check_point_sweep,
    sweep_point,
)
from mosaic_pretrain.glue.points import (
    OK,
    POINTS_FOLDER,
    Clock,
    Point,
    append_result,
    point_name,
    read_points,
    read_results,
    result_row,
    take_point,
)
from mosaic_pretrain.train.composer_model import MLMComposerModel
from mosaic_pretrain.train.export import save_hf_directory

log = logging.getLogger(__name__)

CLOCK_KEYS = ("batches", "samples", "tokens", "wall_hours", "gpu_hours", "cost")


def metric_values(row: dict) -> dict[str, float]:
    """The logged keys of a results-file row."""
    clock = row["clock"]
    values = {f"glue/clock/{key}": clock[key] for key in CLOCK_KEYS if clock[key] is not None}
    if row["status"] != OK:
        return {**values, "glue/sweep_failed": 1.0}
    if row["glue_average"] is not None:
        values["glue/average"] = row["glue_average"]
    for name, task in row["tasks"].items():
        values[f"glue/{name}"] = task["score"]
        values[f"glue/{name}_std"] = task["std"]
    return values


class GlueSweeps(Callback):
    def __init__(
        self,
        folder: Path,
        save_weights: Callable[[Path], object],
        settings: PointSweepSettings,
        mode: SweepMode,
        interval: str | None,
        at_end: bool = True,
        devices: int = 1,
        price: float | None = None,
        keep_weights: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
        sweep: Sweep | None = None,
    ):
        self.folder = folder
        self.save_weights = save_weights  # writes the model as a Hugging Face directory
        self.run_name = settings.run_name
        self.at_end = at_end
        self.devices = devices
        self.price = price
        self.keep_weights = keep_weights
        self.queue = SweepQueue(mode, sweep or partial(sweep_point, settings), should_stop)
        self.interval = None
        if interval is not None:  # fires at the batch end that crosses a multiple of it
            self.interval = create_interval_scheduler(
                interval, include_end_of_training=False, checkpoint_events=False
            )
        self.points: dict[str, Point] = {}  # taken, this run or before a resume
        self.failed: dict[str, str] = {}  # point -> why its sweep has no result
        self.paused_s = 0.0  # training time spent waiting for sweeps, already in Composer's clock
        self._pause_pending = 0.0  # lands in Composer's clock with the next batch's time
        self._recorded: dict[str, dict] = {}  # points in the checkpoint resumed from
        self._ready: list[PointOutcome] = []  # finished, not yet recorded and logged
        self._last_step: int | None = None
        self._resumed = False  # points left by an earlier process are queued

    def state_dict(self) -> dict:
        points = {name: asdict(point.clock) for name, point in self.points.items()}
        return {"points": points, "paused_s": self.paused_s}

    def load_state_dict(self, state: dict) -> None:
        self.paused_s = state["paused_s"]
        self._recorded = state["points"]

    def fit_start(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        self._queue_unfinished()
        self._log_one(state, logger)

    def _queue_unfinished(self) -> None:
        """Once per run: points on disk (taken before a resume) without a finished sweep."""
        if self._resumed:
            return
        self._resumed = True
        _plot_glue_against_batches()
        results = read_results(self.folder)
        on_disk = {point.name: point for point in read_points(self.folder)}
        for name in sorted(set(self._recorded) - set(on_disk)):
            if results.get(name, {}).get("status") != OK:
                self._report_lost(name, f"{self.folder / name} is gone")
        for name, point in on_disk.items():
            self.points[name] = point
            if results.get(name, {}).get("status") == OK:
                continue
            if not point.weights.is_dir():
                self._report_lost(name, f"its weights {point.weights} are gone")
                continue
            log.info("point %s has no GLUE result yet: queued", name)
            self.queue.submit(point)

    def batch_end(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        self.paused_s += self._pause_pending  # the last batch's time included that wait
        self._pause_pending = 0.0
        if self.interval is not None and self.interval(state, Event.BATCH_END):
            self._take(state)
        self._log_one(state, logger)

    def finish(self, state: State, logger: Logger, stopped: bool) -> None:
        """After `fit()`: take the final point and wait for (or run) every sweep still to do;
        with `stopped` (a signal ended training), stop the sweeps instead. Results are logged
        as they arrive, one step each after the last batch; sweeps stopped on request run when
        the run resumes."""
        if dist.get_global_rank() != 0:
            return
        self._queue_unfinished()  # when fit() had nothing to train, fit_start never came
        if stopped:
            self.queue.stop()
        elif self.at_end:
            self._take(state)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the sweep's jobs may share the training GPU
        self._record_after_training(state, logger)
        for outcome in self.queue.drain():
            self._ready.append(outcome)
            self._record_after_training(state, logger)
        pending = [point.name for point in self.queue.pending()]
        if pending:
            log.warning(
                "GLUE sweeps of points %s did not finish; rerun with autoresume: true to run "
                "them (finished jobs are kept)",
                ", ".join(pending),
            )

    def close(self, state: State, logger: Logger) -> None:
        self.queue.stop()

    def _take(self, state: State) -> None:
        timestamp = state.timestamp
        name = point_name(int(timestamp.batch))
        if name in self.points:
            return
        clock = Clock.at(
            int(timestamp.batch), int(timestamp.sample), int(timestamp.token),
            timestamp.total_wct, self.paused_s, self.devices, self.price,
        )  # fmt: skip
        point, new = take_point(self.folder, name, clock, self.save_weights)
        log.info("GLUE point %s: weights in %s (%s)", name, point.weights, "new" if new else "kept")
        self.points[name] = point
        started = time.monotonic()
        self.queue.submit(point)  # in at_point mode, the sweep runs now
        if self.queue.mode is SweepMode.at_point:
            self._pause_pending += time.monotonic() - started

    def _log_one(self, state: State, logger: Logger) -> None:
        """During training: record and log one finished sweep, if this step has none yet."""
        self._ready += self.queue.take_done()
        step = int(state.timestamp.batch)
        if self._ready and (self._last_step is None or step > self._last_step):
            self._record(self._ready.pop(0), logger, step)

    def _record_after_training(self, state: State, logger: Logger) -> None:
        """Every finished sweep, each at its own step from the last batch on."""
        self._ready += self.queue.take_done()
        while self._ready:
            step = int(state.timestamp.batch)
            if self._last_step is not None:
                step = max(step, self._last_step + 1)
            self._record(self._ready.pop(0), logger, step)

    def _record(self, outcome: PointOutcome, logger: Logger, step: int) -> None:
        """Append the point's row to the results file, then log it (the file is the record that
        keeps a rerun from sweeping or logging it again)."""
        point = outcome.point
        row = result_row(self.run_name, point, outcome.report, outcome.error, outcome.attempts)
        self.folder.mkdir(parents=True, exist_ok=True)
        append_result(self.folder, row)
        logger.log_metrics(metric_values(row), step)
        self._last_step = step
        if outcome.report is None:
            self.failed[point.name] = outcome.error or "failed"
            log.error("GLUE sweep of point %s failed: %s", point.name, outcome.error)
            return
        self.failed.pop(point.name, None)
        average = row["glue_average"]
        log.info(
            "GLUE point %s: average %s at %.4f wall hours",
            point.name, "n/a" if average is None else f"{average:.2f}", point.clock.wall_hours,
        )  # fmt: skip
        if not self.keep_weights:
            shutil.rmtree(point.weights, ignore_errors=True)
            log.info("deleted the weights of point %s (its sweep finished)", point.name)

    def _report_lost(self, name: str, why: str) -> None:
        self.failed[name] = f"cannot be swept: {why}"
        log.error("GLUE point %s cannot be swept: %s", name, why)


def _plot_glue_against_batches() -> None:
    """Under W&B, chart `glue/*` against the point's batch rather than the logging step."""
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    wandb.define_metric("glue/clock/batches")
    wandb.define_metric("glue/*", step_metric="glue/clock/batches")


def build_glue_sweeps(
    config: PretrainConfig,
    model: MLMComposerModel,
    tokenizer: PreTrainedTokenizerBase,
    should_stop: Callable[[], bool],
) -> GlueSweeps | None:
    """The GlueSweeps callback of `callbacks.glue_sweep` (None without one). Its sweeps run on
    the GPUs set aside, else after training; `wait_for_sweeps` makes training wait for each."""
    section = config.callbacks.glue_sweep
    if section is None:
        return None
    return GlueSweeps(
        folder=run_folder(config) / POINTS_FOLDER,
        save_weights=lambda out: save_hf_directory(model.model, tokenizer, out),
        settings=PointSweepSettings.from_section(section, config.run_name),
        mode=point_queue.sweep_mode(section.gpus, section.wait_for_sweeps),
        interval=section.interval,
        at_end=section.at_end,
        devices=dist.get_world_size(),
        price=section.gpu_hour_price,
        keep_weights=section.keep_weights,
        should_stop=should_stop,
    )


def glue_sweep_problems(config: PretrainConfig) -> list[str]:
    """Problems of the recipe's `callbacks.glue_sweep` (its YAML, tasks, data, GPUs set aside)."""
    return check_point_sweep(config, run_folder(config) / POINTS_FOLDER)
