"""The ablation's comparison: eval MLM loss of every value at the same steps, as a table
(`ablation.md`, `ablation.csv`, `ablation.json`) and curves (`ablation.png`) in its output folder.

Several seeds per value give mean and sample std over seeds. The table also carries what helps
read a loss difference: parameter count, the last training losses, the final gate range of
expanded activations and the wall time of each run.
"""

import csv
import json
import statistics
from pathlib import Path

import torch

from mosaic_pretrain.ablation.runs import AblationRun
from mosaic_pretrain.callbacks.metrics_file import METRICS_FILE, read_metrics
from mosaic_pretrain.config import PretrainConfig
from mosaic_pretrain.config.folders import ablation_output_folder, run_folder
from mosaic_pretrain.device_info import device_description

EVAL_LOSS = "metrics/eval/LanguageCrossEntropy"
EVAL_ACCURACY = "metrics/eval/MaskedAccuracy"
TRAIN_LOSS = "loss/train/total"
GATE_RANGE = "gate_range/mean"
TRAIN_LOSS_WINDOW = 10  # batches averaged for the table's training loss


def _run_record(run: AblationRun) -> dict:
    outcome = run.outcome() or {"status": "not run"}
    metrics_path = run_folder(run.config) / METRICS_FILE
    series = read_metrics(metrics_path) if metrics_path.exists() else {}
    train_losses = [series[TRAIN_LOSS][step] for step in sorted(series.get(TRAIN_LOSS, {}))]
    gate_ranges = series.get(GATE_RANGE, {})
    accuracy = series.get(EVAL_ACCURACY, {})
    return {
        "value": run.value,
        "seed": run.seed,
        "status": outcome["status"],
        "error": outcome.get("error"),
        "parameters": outcome.get("parameters"),
        "wall_seconds": outcome.get("wall_seconds"),
        "eval_loss": {int(step): loss for step, loss in series.get(EVAL_LOSS, {}).items()},
        "train_loss": {int(step): loss for step, loss in series.get(TRAIN_LOSS, {}).items()},
        "final_train_loss": (
            statistics.fmean(train_losses[-TRAIN_LOSS_WINDOW:]) if train_losses else None
        ),
        "final_gate_range": gate_ranges[max(gate_ranges)] if gate_ranges else None,
        "final_eval_accuracy": accuracy[max(accuracy)] if accuracy else None,
    }


def _mean_std(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarize(base: PretrainConfig, runs: list[AblationRun], recipe: Path) -> dict:
    records = [_run_record(run) for run in runs]
    finished = [record for record in records if record["status"] == "finished"]
    # Equal steps: those every finished run evaluated at.
    step_sets = [set(record["eval_loss"]) for record in finished]
    steps = sorted(set.intersection(*step_sets)) if step_sets else []
    values = []
    for value in base.ablation.values:
        mine = [record for record in finished if record["value"] == value]
        summary = {"value": value, "seeds": [record["seed"] for record in mine]}
        if mine:
            summary["eval_loss"] = {
                step: _mean_std([record["eval_loss"][step] for record in mine]) for step in steps
            }
            summary["parameters"] = mine[0]["parameters"]
            for key in (
                "final_eval_accuracy", "final_train_loss", "final_gate_range", "wall_seconds"
            ):  # fmt: skip
                present = [record[key] for record in mine if record[key] is not None]
                summary[key] = _mean_std(present) if present else None
        values.append(summary)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "recipe": str(recipe),
        "output_folder": str(ablation_output_folder(base)),
        "key": base.ablation.key,
        "max_duration": base.max_duration,
        "eval_interval": base.eval_interval,
        "steps": steps,
        **device_description(device),
        "values": values,
        "runs": records,
    }


def _cell(statistic: dict | None, digits: int = 4) -> str:
    if statistic is None:
        return "-"
    text = f"{statistic['mean']:.{digits}f}"
    return text + (f" ± {statistic['std']:.{digits}f}" if statistic["n"] > 1 else "")


def _percent(statistic: dict | None) -> str:
    if statistic is None:
        return "-"
    scaled = {**statistic, "mean": 100 * statistic["mean"], "std": 100 * statistic["std"]}
    return _cell(scaled, 1) + "%"


def render_markdown(report: dict) -> str:
    steps = report["steps"]
    last = steps[-1] if steps else None
    done = [summary for summary in report["values"] if summary.get("eval_loss")]
    best = min((s["eval_loss"][last]["mean"] for s in done), default=None) if last else None
    header = [
        report["key"].rsplit(".", 1)[-1],
        "parameters",
        *[f"eval loss @{step}ba" for step in steps],
        "eval masked accuracy",
        f"train loss (last {TRAIN_LOSS_WINDOW} ba)",
        "gate range",
        "wall s",
    ]
    lines = [
        f"Ablation of `{report['key']}` ({report['recipe']}): {report['max_duration']}, eval "
        f"every {report['eval_interval']}; {report['device']}, torch {report['torch']}, "
        f"{report['date']}. Eval loss: MLM cross-entropy on the eval split, mean ± sample std "
        "over seeds when there are several; best final loss in bold.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for summary in report["values"]:
        if not summary.get("eval_loss"):
            failed = [r for r in report["runs"] if r["value"] == summary["value"]]
            status = ", ".join(sorted({r["status"] for r in failed})) or "not run"
            lines.append(f"| {summary['value']} | {status} |" + " |" * (len(header) - 2))
            continue
        losses = [_cell(summary["eval_loss"][step]) for step in steps]
        if summary["eval_loss"][last]["mean"] == best:
            losses[-1] = f"**{losses[-1]}**"
        lines.append(
            "| "
            + " | ".join(
                [
                    summary["value"],
                    f"{summary['parameters']:,}" if summary["parameters"] else "-",
                    *losses,
                    _percent(summary["final_eval_accuracy"]),
                    _cell(summary["final_train_loss"]),
                    _cell(summary["final_gate_range"], 3),
                    _cell(summary["wall_seconds"], 0),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_csv(report: dict, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["value", "seed", "status", "parameters", "step", "eval_loss"])
        for record in report["runs"]:
            for step in sorted(record["eval_loss"]) or [None]:
                loss = record["eval_loss"].get(step) if step is not None else None
                writer.writerow([record["value"], record["seed"], record["status"],
                                 record["parameters"], step, loss])  # fmt: skip


def plot_curves(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (eval_axis, train_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("tab20").colors
    for index, value in enumerate(summary["value"] for summary in report["values"]):
        color = colors[index % len(colors)]
        for number, record in enumerate(r for r in report["runs"] if r["value"] == value):
            label = value if number == 0 else None
            steps = sorted(record["eval_loss"])
            eval_axis.plot(steps, [record["eval_loss"][s] for s in steps], marker="o",
                           markersize=3, color=color, label=label)  # fmt: skip
            steps = sorted(record["train_loss"])
            smoothed = _moving_average([record["train_loss"][s] for s in steps])
            train_axis.plot(steps, smoothed, color=color, linewidth=1, label=label)
    eval_axis.set(xlabel="batch", ylabel="eval MLM loss", title=f"{report['key']}: eval loss")
    train_axis.set(xlabel="batch", ylabel="train loss", title=f"train loss ({TRAIN_LOSS_WINDOW}-"
                   "batch moving average)")  # fmt: skip
    eval_axis.legend(fontsize=7, ncol=2)
    for axis in (eval_axis, train_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _moving_average(values: list[float]) -> list[float]:
    averaged = []
    for index in range(len(values)):
        window = values[max(0, index - TRAIN_LOSS_WINDOW + 1) : index + 1]
        averaged.append(statistics.fmean(window))
    return averaged


def write_report(base: PretrainConfig, runs: list[AblationRun], recipe: Path) -> tuple[dict, str]:
    """Write ablation.{json,md,csv,png} to the ablation's output folder; the report and table."""
    report = summarize(base, runs, recipe)
    folder = ablation_output_folder(base)
    folder.mkdir(parents=True, exist_ok=True)
    table = render_markdown(report)
    (folder / "ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "ablation.md").write_text(table)
    write_csv(report, folder / "ablation.csv")
    plot_curves(report, folder / "ablation.png")
    return report, table
