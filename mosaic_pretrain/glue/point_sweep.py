"""The GLUE sweep of one pretraining point: the sweep YAML named in `callbacks.glue_sweep`, pointed
at the point's weights and folder; its checks before pretraining starts; and running it, with
retries. A retry reruns the sweep in the same folder, so jobs that finished are kept."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from composer.utils import dist

from mosaic_pretrain.config.schema import GlueSweepSection, PretrainConfig
from mosaic_pretrain.errors import ConfigError, MosaicPretrainError, Problems, first_line
from mosaic_pretrain.glue.config import DeviceChoice, SweepConfig, load_sweep
from mosaic_pretrain.glue.points import Point, read_points
from mosaic_pretrain.glue.sweep import SweepStopped, check_data, glue

logger = logging.getLogger(__name__)

KEY = "callbacks.glue_sweep"
# Metric keys of the callback (glue/average, glue/clock/...): no task may be named so.
RESERVED_TASK_NAMES = ("average", "clock", "sweep_failed")
# Stand-ins for the two keys a sweep YAML must set but a point sets itself.
PLACEHOLDERS = ("run_name=glue-point", "starting_point=glue-point")


@dataclass(frozen=True)
class PointSweepSettings:
    sweep: str  # the sweep YAML
    overrides: tuple[str, ...]
    gpus: tuple[int, ...]  # set aside for the sweeps; empty: the sweep's own placement
    retries: int
    run_name: str  # the pretraining run's

    @classmethod
    def from_section(cls, section: GlueSweepSection, run_name: str) -> "PointSweepSettings":
        return cls(
            section.sweep, tuple(section.sweep_overrides), tuple(section.gpus), section.retries,
            run_name,
        )  # fmt: skip


@dataclass(frozen=True)
class PointOutcome:
    point: Point
    report: dict | None  # the sweep's report when every job finished
    error: str | None  # why not, after the last attempt
    attempts: int
    stopped: bool = False  # stopped on request: neither finished nor failed; runs again later


def _escape(path: Path) -> str:
    """A folder as a sweep `output_folder`, which is a template with `{run_name}`."""
    return str(path.resolve()).replace("{", "{{").replace("}", "}}")


def load_point_sweep(settings: PointSweepSettings, point: Point) -> SweepConfig:
    """The sweep for `point`: its starting point, output folder and run name are the point's;
    set-aside GPUs become its `parallel.gpus`."""
    config = load_sweep(settings.sweep, [*settings.overrides, *PLACEHOLDERS])
    if settings.gpus:
        parallel = replace(config.parallel, device=DeviceChoice.gpu, gpus=list(settings.gpus))
        config = replace(config, parallel=parallel)
    return replace(
        config,
        run_name=f"{settings.run_name}-{point.name}",
        starting_point=str(point.weights.resolve()),
        output_folder=_escape(point.sweep_folder),
    )


def check_point_sweep(config: PretrainConfig, points_folder: Path) -> list[str]:
    """Every problem of callbacks.glue_sweep that would show only at the first point: the sweep
    file (schema, tasks, data), the set-aside GPUs, and points of an earlier run."""
    section = config.callbacks.glue_sweep
    if section is None:
        return []
    settings = PointSweepSettings.from_section(section, config.run_name)
    try:
        loaded = load_sweep(settings.sweep, [*settings.overrides, *PLACEHOLDERS])
    except ConfigError as error:
        return [f"{KEY}.sweep {settings.sweep}: {problem}" for problem in error.problems]
    problems = Problems()
    for name in loaded.tasks:
        if name in RESERVED_TASK_NAMES:
            problems.add(f"{KEY}.sweep: a task may not be named {name!r}; rename it")
    if section.gpus and loaded.parallel.gpus is not None:
        problems.add(
            f"{KEY}.gpus and the sweep's parallel.gpus both choose GPUs; keep only {KEY}.gpus"
        )
    if section.gpus and loaded.parallel.device is DeviceChoice.cpu:
        problems.add(f"{KEY}.gpus sets GPUs aside, but the sweep says parallel.device=cpu")
    problems.attempt(
        check_gpus, section.gpus, torch.cuda.device_count(), dist.get_local_world_size()
    )
    problems.attempt(check_data, loaded)  # the tasks' data: the same whatever GPUs run them
    if read_points(points_folder) and not config.autoresume:
        problems.add(
            f"{points_folder} holds GLUE points of an earlier run; set autoresume: true to "
            "continue that run, or remove the folder"
        )
    return problems.found


def check_gpus(gpus: list[int], gpu_count: int, local_world_size: int) -> None:
    """Set-aside GPUs exist and are not the ones training uses (local rank r trains on GPU r)."""
    if not gpus:
        return
    if gpu_count == 0:
        raise ConfigError(
            f"{KEY}.gpus={gpus}: no GPU is visible; leave gpus empty to sweep after training"
        )
    unknown = [gpu for gpu in gpus if gpu >= gpu_count]
    if unknown:
        raise ConfigError(f"{KEY}.gpus={gpus}: choose ids among 0..{gpu_count - 1}")
    training = [gpu for gpu in gpus if gpu < local_world_size]
    if training:
        free = list(range(local_world_size, gpu_count))
        raise ConfigError(
            f"{KEY}.gpus={gpus}: GPU {training} trains this run (local rank r uses GPU r, "
            f"0..{local_world_size - 1}); set aside others{f', e.g. {free}' if free else ''}"
        )


def sweep_point(
    settings: PointSweepSettings, point: Point, should_stop: Callable[[], bool]
) -> PointOutcome:
    """Run the point's sweep, again up to `retries` times while any job fails.

    Any error is caught and returned: a sweep that goes wrong is reported by the caller, and
    never takes the pretraining run down with it (the traceback of an unexpected one is logged).
    """
    error = None
    attempts = 0
    for attempt in range(1, settings.retries + 2):
        if should_stop():
            return PointOutcome(point, None, None, attempts, stopped=True)
        attempts = attempt
        try:
            outcome, report, table = glue(load_point_sweep(settings, point), False, should_stop)
        except SweepStopped:
            return PointOutcome(point, None, None, attempts, stopped=True)
        except MosaicPretrainError as caught:
            error = str(caught)
        except Exception as caught:  # a bug: logged with its traceback, reported as a failure
            logger.exception("GLUE sweep of point %s raised", point.name)
            error = f"{type(caught).__name__}: {first_line(caught)}"
        else:
            if not outcome.failed:
                logger.info("GLUE sweep of point %s:\n%s", point.name, table)
                return PointOutcome(point, report, None, attempts)
            error = (
                f"{len(outcome.failed)} of {len(outcome.jobs)} jobs failed "
                f"({', '.join(sorted(outcome.failed))}); logs in {outcome.folder}/jobs/NAME/job.log"
            )
        logger.warning(
            "GLUE sweep of point %s failed (attempt %d of %d): %s",
            point.name, attempt, settings.retries + 1, error,
        )  # fmt: skip
    return PointOutcome(point, None, error, attempts)
