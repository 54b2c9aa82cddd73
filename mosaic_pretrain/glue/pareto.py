"""`mosaic-pretrain pareto RUN_DIR ...`: GLUE score against the pretraining clock (wall time,
GPU-hours, cost, tokens, ...) for one or more runs, with the Pareto frontier marked, as a PNG and a
CSV. Each run's points come from its GLUE points results file (`callbacks.glue_sweep`).

One series per label (a run's name unless given); runs sharing a label are averaged point by
point, their spread (sample std over runs) drawn as error bars on both axes. A series of one run
shows the seeds' spread: a task's sample std over its seeds; for the GLUE average, the std one
seed's average would have if the tasks varied independently, sqrt(sum of task variances) / tasks.

A point is on the frontier when no other point is at most as costly (x) and at least as good
(score), and strictly better in one of the two: equal points are both on it. The frontier is
marked over every series together (which run is the better buy), and per series.
"""

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.glue.points import OK, POINTS_FOLDER, RESULTS_FILE, read_results

X_AXES = {
    "wall_hours": "pretraining wall-clock hours",
    "gpu_hours": "pretraining GPU-hours",
    "cost": "pretraining cost",
    "tokens": "real tokens seen",
    "samples": "samples seen",
    "batches": "batches",
}
CLOCK_COLUMNS = ("batches", "samples", "tokens", "wall_hours", "gpu_hours", "cost")
AVERAGE = "glue_average"


def pareto_front(xs: list[float], ys: list[float]) -> list[bool]:
    """For each (x, y): True when no other point has x <= and y >= with one of them strict
    (lower x is cheaper, higher y better)."""
    points = list(zip(xs, ys, strict=True))
    return [
        not any(
            other_x <= x and other_y >= y and (other_x < x or other_y > y)
            for other_x, other_y in points
        )
        for x, y in points
    ]


@dataclass(frozen=True)
class RunResults:
    """One run's finished points, in pretraining order."""

    folder: Path  # its glue_points folder
    label: str
    rows: list[dict]
    failed: list[str]  # points whose sweep failed: not drawn


@dataclass(frozen=True)
class CurvePoint:
    series: str
    point: str
    runs: int  # how many runs of the series have this point
    clock: dict  # mean over those runs
    x: float
    x_std: float
    y: float
    y_std: float
    spread: str  # runs: std over runs; seeds: from the seeds' spread
    frontier: bool = False  # over every series
    series_frontier: bool = False  # within its own series


def points_folder(run_dir: Path) -> Path:
    """A run's glue_points folder, given it or the run's folder (save_folder)."""
    return run_dir if (run_dir / RESULTS_FILE).is_file() else run_dir / POINTS_FOLDER


def read_run(run_dir: Path, label: str | None = None) -> RunResults:
    folder = points_folder(run_dir)
    results = read_results(folder)
    rows = sorted(
        (row for row in results.values() if row["status"] == OK),
        key=lambda row: row["clock"]["batches"],
    )
    if not rows:
        raise ConfigError(
            f"{run_dir} has no finished GLUE points (no ok row in {folder / RESULTS_FILE}); "
            "name the save folder of a run pretrained with callbacks.glue_sweep"
        )
    failed = sorted(name for name, row in results.items() if row["status"] != OK)
    return RunResults(folder, label or rows[0]["run_name"], rows, failed)


def score(row: dict, task: str | None, run: Path) -> tuple[float, float]:
    """(score, seed spread) of a point: the GLUE average, or one task's score."""
    if task is None:
        if row["glue_average"] is None:
            raise ConfigError(
                f"point {row['point']} of {run} has no GLUE average (its sweep has only custom "
                f"tasks: {', '.join(row['tasks'])}); choose one with --task"
            )
        stds = [row["tasks"][name]["std"] for name in row["glue_average_tasks"]]
        return row["glue_average"], math.sqrt(sum(std**2 for std in stds)) / len(stds)
    if task not in row["tasks"]:
        raise ConfigError(
            f"point {row['point']} of {run} has no task {task!r}; choose from "
            f"{', '.join(row['tasks'])}"
        )
    return row["tasks"][task]["score"], row["tasks"][task]["std"]


def x_value(row: dict, x: str, run: Path, price: float | None) -> float:
    clock = row["clock"]
    if x != "cost":
        return float(clock[x])
    if clock["cost"] is not None:
        return float(clock["cost"])
    if price is not None:
        return clock["gpu_hours"] * price
    raise ConfigError(
        f"{run} recorded no cost (its recipe set no callbacks.glue_sweep.gpu_hour_price); pass "
        "--gpu-hour-price PRICE, or plot --x gpu_hours"
    )


def curve_points(
    runs: list[RunResults], x: str, task: str | None, price: float | None = None
) -> list[CurvePoint]:
    """One point per series and point name, frontiers marked."""
    if x not in X_AXES:
        raise ConfigError(f"x axis {x!r} is unknown; choose one of {', '.join(X_AXES)}")
    grouped: dict[tuple[str, str], list[tuple[float, float, float, dict]]] = {}
    for run in runs:
        for row in run.rows:
            y, seed_std = score(row, task, run.folder)
            measured = (x_value(row, x, run.folder, price), y, seed_std, row["clock"])
            grouped.setdefault((run.label, row["point"]), []).append(measured)
    points = []
    for (series, name), measured in grouped.items():
        xs, ys, seed_stds, clocks = zip(*measured, strict=True)
        several = len(measured) > 1
        clock = {
            key: float(np.mean([c[key] for c in clocks]))
            if all(c[key] is not None for c in clocks)
            else None
            for key in CLOCK_COLUMNS
        }
        points.append(
            CurvePoint(
                series=series,
                point=name,
                runs=len(measured),
                clock=clock,
                x=float(np.mean(xs)),
                x_std=float(np.std(xs, ddof=1)) if several else 0.0,
                y=float(np.mean(ys)),
                y_std=float(np.std(ys, ddof=1)) if several else seed_stds[0],
                spread="runs" if several else "seeds",
            )
        )
    points.sort(key=lambda point: (point.series, point.x))
    return mark_frontiers(points)


def mark_frontiers(points: list[CurvePoint]) -> list[CurvePoint]:
    overall = pareto_front([p.x for p in points], [p.y for p in points])
    marked = [replace(p, frontier=on) for p, on in zip(points, overall, strict=True)]
    for series in {p.series for p in points}:
        indices = [i for i, p in enumerate(marked) if p.series == series]
        front = pareto_front([marked[i].x for i in indices], [marked[i].y for i in indices])
        for i, on in zip(indices, front, strict=True):
            marked[i] = replace(marked[i], series_frontier=on)
    return marked


def write_csv(points: list[CurvePoint], x: str, y_name: str, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["series", "point", "runs", *CLOCK_COLUMNS, f"x_{x}", "x_std", f"y_{y_name}",
             "y_std", "spread", "frontier", "series_frontier"]
        )  # fmt: skip
        for p in points:
            clock = ["" if p.clock[key] is None else f"{p.clock[key]:.6g}" for key in CLOCK_COLUMNS]
            writer.writerow(
                [p.series, p.point, p.runs, *clock, f"{p.x:.6g}", f"{p.x_std:.6g}", f"{p.y:.4f}",
                 f"{p.y_std:.4f}", p.spread, int(p.frontier), int(p.series_frontier)]
            )  # fmt: skip


def plot(points: list[CurvePoint], x: str, y_label: str, path: Path) -> None:
    """Each series with error bars; the overall frontier as a staircase through ringed points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    for series in sorted({p.series for p in points}):
        mine = [p for p in points if p.series == series]
        axis.errorbar(
            [p.x for p in mine],
            [p.y for p in mine],
            xerr=[p.x_std for p in mine],
            yerr=[p.y_std for p in mine],
            marker="o",
            capsize=3,
            label=series,
        )
    front = sorted((p for p in points if p.frontier), key=lambda p: p.x)
    axis.step(
        [p.x for p in front], [p.y for p in front], where="post", color="black", linewidth=1,
        linestyle="--", label="Pareto frontier",
    )  # fmt: skip
    axis.scatter(
        [p.x for p in front], [p.y for p in front], s=160, facecolors="none", edgecolors="black"
    )
    axis.set_xlabel(X_AXES[x])
    axis.set_ylabel(f"{y_label} (x100)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@dataclass(frozen=True)
class ParetoOutput:
    png: Path
    csv: Path
    points: list[CurvePoint]
    failed: dict[str, list[str]]  # run folder -> points whose sweep failed (not drawn)


def pareto(
    run_dirs: list[Path],
    x: str = "wall_hours",
    task: str | None = None,
    labels: list[str] | None = None,
    out: Path = Path("pareto"),
    price: float | None = None,
) -> ParetoOutput:
    """Read the runs, mark the frontiers, write OUT/pareto-Y-X.png and .csv."""
    if labels and len(labels) != len(run_dirs):
        raise ConfigError(
            f"{len(labels)} labels for {len(run_dirs)} runs; give one --label per RUN_DIR, or none"
        )
    runs = [read_run(Path(run), labels[i] if labels else None) for i, run in enumerate(run_dirs)]
    points = curve_points(runs, x, task, price)
    y_name = task or AVERAGE
    out.mkdir(parents=True, exist_ok=True)
    stem = f"pareto-{y_name}-{x}"
    png, csv_path = out / f"{stem}.png", out / f"{stem}.csv"
    write_csv(points, x, y_name, csv_path)
    plot(points, x, "GLUE average" if task is None else task, png)
    failed = {str(run.folder): run.failed for run in runs if run.failed}
    return ParetoOutput(png, csv_path, points, failed)
