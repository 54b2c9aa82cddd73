"""The sweep's report: per task, each metric's mean and standard deviation over seeds, and the GLUE
average; printed, and written as `report.json`, `report.csv` and `report.png`.

Scores are x100, as GLUE reports them. A job's score comes from one evaluation, chosen by the
score policy: `last` (the end of training, as MosaicBERT reports) or `best` (the evaluation with
the best primary metric, averaged over dev splits; the other metrics are taken from the same
evaluation). A task's score is the mean of its metrics (MNLI: matched and mismatched accuracy;
MRPC and QQP: accuracy and F1; STS-B: Pearson and Spearman). The GLUE average is the mean task
score over the GLUE tasks in the sweep; custom tasks are reported but not averaged. The standard
deviation is the sample one (n - 1), 0 for a single seed.
"""

import csv
import json
import math
from pathlib import Path

import numpy as np

from mosaic_pretrain.data.glue_tasks import GLUE_TASKS, TaskSpec
from mosaic_pretrain.glue.config import ScorePolicy
from mosaic_pretrain.glue.job import JOBS_FOLDER, RESULT_FILE, JobSpec

REPORT_JSON = "report.json"
REPORT_CSV = "report.csv"
REPORT_PNG = "report.png"
SCALE = 100.0


def _evaluation_points(evaluations: list[dict]) -> dict[int, dict[str, dict[str, float]]]:
    """{batch: {split: metrics}}; a later evaluation of the same split at one batch wins."""
    points: dict[int, dict[str, dict[str, float]]] = {}
    for evaluation in evaluations:
        points.setdefault(evaluation["batch"], {})[evaluation["split"]] = evaluation["metrics"]
    return points


def job_scores(result: dict, task: TaskSpec, policy: ScorePolicy) -> dict[str, float]:
    """{score key: value x100} from the evaluation the policy picks."""
    points = {
        batch: splits
        for batch, splits in _evaluation_points(result["evaluations"]).items()
        if set(splits) == set(task.dev_splits)
    }
    if not points:
        raise ValueError(f"{result['name']} has no complete evaluation of {task.dev_splits}")
    if policy is ScorePolicy.last:
        chosen = points[max(points)]
    else:

        def primary(batch: int) -> float:
            return float(np.mean([points[batch][s][task.primary_metric] for s in task.dev_splits]))

        chosen = points[max(sorted(points), key=primary)]  # earliest of equal bests
    single = len(task.dev_splits) == 1
    return {
        (metric if single else f"{metric}_{split}"): SCALE * chosen[split][metric]
        for split in task.dev_splits
        for metric in task.metrics
    }


def _statistics(values: list[float]) -> dict:
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values), "values": values}


def summarize(
    jobs: list[JobSpec], folder: Path, policy: ScorePolicy, failed: dict[str, str] | None = None
) -> dict:
    """The report of every planned job that has a result in `folder/jobs`."""
    failed = dict(failed or {})
    tasks: dict[str, dict] = {}
    job_rows = []
    for job in jobs:
        task = job.task_spec
        entry = tasks.setdefault(
            task.name, {"glue": task.name in GLUE_TASKS, "scores": {}, "seeds": [], "missing": []}
        )
        result_path = folder / JOBS_FOLDER / job.name / RESULT_FILE
        if not result_path.exists():
            entry["missing"].append(job.seed)
            continue
        result = json.loads(result_path.read_text())
        scores = job_scores(result, task, policy)
        entry["seeds"].append(job.seed)
        for key, value in scores.items():
            entry["scores"].setdefault(key, []).append(value)
        job_rows.append(
            {
                "name": job.name,
                "task": task.name,
                "seed": job.seed,
                "scores": scores,
                "wall_time_s": result["wall_time_s"],
                "device": result["device"],
                "start": job.start_job or "pretrained",
            }
        )
    report_tasks = {}
    for name, entry in tasks.items():
        if not entry["seeds"]:
            report_tasks[name] = {"glue": entry["glue"], "seeds": [], "missing": entry["missing"]}
            continue
        per_seed_task_score = np.mean(list(entry["scores"].values()), axis=0).tolist()
        report_tasks[name] = {
            "glue": entry["glue"],
            "seeds": entry["seeds"],
            "missing": entry["missing"],
            "metrics": {key: _statistics(values) for key, values in entry["scores"].items()},
            "score": _statistics(per_seed_task_score),
        }
    averaged = [name for name, entry in report_tasks.items() if entry["glue"] and "score" in entry]
    glue_average = (
        float(np.mean([report_tasks[name]["score"]["mean"] for name in averaged]))
        if averaged
        else None
    )
    return {
        "score_policy": policy.value,
        "scale": "x100",
        "tasks": report_tasks,
        "glue_average": {
            "value": glue_average,
            "tasks": averaged,
            "complete": set(averaged) == set(GLUE_TASKS),
        },
        "jobs": job_rows,
        "failed": failed,
    }


def render_table(report: dict) -> str:
    """A plain-text table: one row per task metric, then the task score and the GLUE average."""
    lines = [f"{'task':<10} {'metric':<22} {'mean':>7} {'std':>6} {'seeds':>5}"]
    for name, entry in report["tasks"].items():
        if "score" not in entry:
            lines.append(f"{name:<10} {'(no finished job)':<22}")
            continue
        rows = list(entry["metrics"].items())
        if len(rows) > 1:
            rows.append(("task score", entry["score"]))
        for key, stats in rows:
            lines.append(
                f"{name:<10} {key:<22} {stats['mean']:>7.2f} {stats['std']:>6.2f} {stats['n']:>5}"
            )
    average = report["glue_average"]
    if average["value"] is not None:
        scope = "all 8 tasks" if average["complete"] else f"over {', '.join(average['tasks'])}"
        lines.append(f"GLUE average ({scope}, x100): {average['value']:.2f}")
    for name, why in report["failed"].items():
        lines.append(f"FAILED {name}: {why}")
    return "\n".join(lines)


def write_csv(report: dict, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "metric", "mean", "std", "n", "values"])
        for name, entry in report["tasks"].items():
            if "score" not in entry:
                continue
            for key, stats in [*entry["metrics"].items(), ("task_score", entry["score"])]:
                values = " ".join(f"{value:.4f}" for value in stats["values"])
                writer.writerow(
                    [name, key, f"{stats['mean']:.4f}", f"{stats['std']:.4f}", stats["n"], values]
                )
        average = report["glue_average"]
        if average["value"] is not None:
            writer.writerow(
                ["glue_average", "+".join(average["tasks"]), average["value"], "", "", ""]
            )


def plot_report(report: dict, path: Path) -> None:
    """Bars: each task's score (mean, with the seeds' spread and each seed as a dot; custom tasks
    in grey), then the GLUE average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, entry in report["tasks"].items() if "score" in entry]
    means = [report["tasks"][name]["score"]["mean"] for name in names]
    stds = [report["tasks"][name]["score"]["std"] for name in names]
    figure, axis = plt.subplots(figsize=(1.1 * len(names) + 3, 3.8))
    positions = np.arange(len(names))
    colors = ["#4c72b0" if report["tasks"][name]["glue"] else "#8c8c8c" for name in names]
    axis.bar(positions, means, yerr=stds, capsize=4, color=colors, alpha=0.85)
    for position, name in zip(positions, names, strict=True):
        values = report["tasks"][name]["score"]["values"]
        axis.plot([position] * len(values), values, "k.", markersize=4)
    labels = list(names)
    average = report["glue_average"]["value"]
    if average is not None:
        axis.bar(len(names), average, color="#dd8452")
        labels.append("GLUE avg")
    axis.set_xticks(range(len(labels)), labels)
    axis.set_ylabel(f"score ({report['score_policy']} eval, x100)")
    axis.grid(axis="y", alpha=0.3)
    finite = [value for value in [*means, average] if value is not None and math.isfinite(value)]
    axis.set_ylim(min(0.0, *finite) if finite else 0.0, 100)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(report: dict, folder: Path) -> str:
    """Writes JSON, CSV and PNG into `folder`; returns the printed table."""
    (folder / REPORT_JSON).write_text(json.dumps(report, indent=2))
    write_csv(report, folder / REPORT_CSV)
    plot_report(report, folder / REPORT_PNG)
    return render_table(report)
