"""A pretraining run's GLUE points on disk: where each point's weights, clock and sweep live, and
the results file that `mosaic-pretrain pareto` reads.

```
RUN/glue_points/
  ba2000/weights/        the model at that batch, a Hugging Face directory (removed once its
                         sweep has finished, unless keep_weights)
  ba2000/clock.json      the pretraining clock there; written last, so it marks a complete copy
  ba2000/sweep/          the point's GLUE sweep folder (jobs/, report.json, ...)
  results.jsonl          one row per finished (or finally failed) sweep, appended
```
RUN is the run's folder (its save_folder, else runs/RUN_NAME). The results file is the record of
what was logged: a point with an `ok` row is never swept or logged again.
"""

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from mosaic_pretrain.glue.report import REPORT_JSON

POINTS_FOLDER = "glue_points"
RESULTS_FILE = "results.jsonl"
CLOCK_FILE = "clock.json"
WEIGHTS_FOLDER = "weights"
SWEEP_FOLDER = "sweep"
OK = "ok"
FAILED = "failed"
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Clock:
    """The pretraining clock at a point. `wall_hours` is Composer's training wall clock (kept
    across resumes; evaluation excluded, as Composer counts it) less the time training waited
    for sweeps; `gpu_hours` is that times the training devices (device-hours on a CPU)."""

    batches: int
    samples: int
    tokens: int  # real (non-padding) tokens
    wall_hours: float
    devices: int
    gpu_hours: float
    cost: float | None  # gpu_hours x the configured price, or None without a price

    @classmethod
    def at(
        cls,
        batches: int,
        samples: int,
        tokens: int,
        wall: timedelta,
        paused_s: float,
        devices: int,
        price: float | None,
    ) -> "Clock":
        hours = max(wall.total_seconds() - paused_s, 0.0) / SECONDS_PER_HOUR
        gpu_hours = hours * devices
        cost = gpu_hours * price if price is not None else None
        return cls(batches, samples, tokens, hours, devices, gpu_hours, cost)


def point_name(batches: int) -> str:
    return f"ba{batches}"


@dataclass(frozen=True)
class Point:
    name: str
    folder: Path
    clock: Clock

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_FOLDER

    @property
    def sweep_folder(self) -> Path:
        return self.folder / SWEEP_FOLDER


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2))
    os.replace(partial, path)


def take_point(
    points_folder: Path, name: str, clock: Clock, save: Callable[[Path], object]
) -> tuple[Point, bool]:
    """The point `name`, its weights written by `save(directory)`; (point, True if new). A point
    already complete on disk (taken before a resume) is kept as it is."""
    folder = points_folder / name
    existing = read_point(folder)
    if existing is not None:
        return existing, False
    if folder.exists():  # a copy cut short by a kill: take it again
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save(folder / WEIGHTS_FOLDER)
    _write_json(folder / CLOCK_FILE, asdict(clock))
    return Point(name, folder, clock), True


def read_point(folder: Path) -> Point | None:
    clock_file = folder / CLOCK_FILE
    if not clock_file.is_file():
        return None
    return Point(folder.name, folder, Clock(**json.loads(clock_file.read_text())))


def read_points(points_folder: Path) -> list[Point]:
    """Every complete point, in pretraining order."""
    if not points_folder.is_dir():
        return []
    points = [read_point(folder) for folder in points_folder.iterdir() if folder.is_dir()]
    return sorted((p for p in points if p is not None), key=lambda point: point.clock.batches)


def read_results(points_folder: Path) -> dict[str, dict]:
    """{point: its last row}; a later row (a rerun after a failure) replaces an earlier one."""
    path = points_folder / RESULTS_FILE
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["point"]: row for row in rows}


def append_result(points_folder: Path, row: dict) -> None:
    with (points_folder / RESULTS_FILE).open("a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def result_row(
    run_name: str, point: Point, report: dict | None, error: str | None, attempts: int
) -> dict:
    """The results-file row of a point's finished sweep (report) or of its final failure."""
    row = {
        "point": point.name,
        "status": OK if report is not None else FAILED,
        "run_name": run_name,
        "clock": asdict(point.clock),
        "attempts": attempts,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if report is None:
        return {**row, "error": error}
    tasks = {
        name: {
            "score": entry["score"]["mean"],
            "std": entry["score"]["std"],
            "n": entry["score"]["n"],
            "glue": entry["glue"],
        }
        for name, entry in report["tasks"].items()
        if "score" in entry
    }
    return {
        **row,
        "glue_average": report["glue_average"]["value"],
        "glue_average_tasks": report["glue_average"]["tasks"],
        "tasks": tasks,
        "report": str(point.sweep_folder / REPORT_JSON),
    }
