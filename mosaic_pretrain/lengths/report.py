"""The `eval-lengths` report: `lengths.json` (everything), `lengths.csv` (a row per model and
length), `lengths.png` (MLM loss against length, log2 axis, a line per model that stops where a
position table does) and the console table.

The three files are first written under temporary names and renamed together once all exist, so
a folder never holds half a report.
"""

import csv
import json
import math
import os
from pathlib import Path

REPORT_JSON = "lengths.json"
REPORT_CSV = "lengths.csv"
REPORT_PNG = "lengths.png"
CSV_COLUMNS = ("model", "length", "status", "loss", "accuracy", "rows", "masked_tokens", "note")


def skipped(length: int, limit: int) -> dict:
    return {
        "length": length,
        "skipped": True,
        "reason": f"beyond its {limit}-position table (max_position_embeddings={limit})",
    }


def scored(length: int, loss_sum: float, correct: int, masked: int, rows: int) -> dict:
    loss = loss_sum / masked if masked else None
    return {
        "length": length,
        "skipped": False,
        "loss": loss if loss is not None and math.isfinite(loss) else None,
        "accuracy": correct / masked if masked else None,
        "rows": rows,
        "masked_tokens": masked,
    }


def write_csv(report: dict, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for model in report["models"]:
            for entry in model["results"]:
                if entry["skipped"]:
                    writer.writerow([model["label"], entry["length"], "skipped", "", "", "", "",
                                     entry["reason"]])  # fmt: skip
                    continue
                loss, accuracy = entry["loss"], entry["accuracy"]
                writer.writerow([
                    model["label"], entry["length"], "scored",
                    "" if loss is None else f"{loss:.6f}",
                    "" if accuracy is None else f"{accuracy:.6f}",
                    entry["rows"], entry["masked_tokens"], "",
                ])  # fmt: skip


def plot_lengths(report: dict, path: Path) -> None:
    """MLM loss against row length (log2 axis), a line with a marker per point for each model;
    lengths a model skipped or could not score are left out, so its line stops there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.8))
    for model in report["models"]:
        points = [
            (entry["length"], entry["loss"])
            for entry in model["results"]
            if not entry["skipped"] and entry["loss"] is not None
        ]
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", label=model["label"])
    axis.set_xscale("log", base=2)
    axis.set_xticks(report["lengths"], [str(length) for length in report["lengths"]])
    axis.minorticks_off()
    axis.set_xlabel("row length (tokens)")
    axis.set_ylabel("MLM loss (masked tokens)")
    axis.set_title("MLM loss by sequence length")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")  # the temporary name has no .png
    plt.close(figure)


def render_table(report: dict) -> str:
    """Loss per model (rows) and length (columns); skipped lengths say so, and why, below."""
    lengths = report["lengths"]
    width = max(12, *(len(model["label"]) for model in report["models"]))
    lines = [
        f"MLM loss by row length ({report['rows']['summary']})",
        f"{'model':<{width}}" + "".join(f" {length:>8}" for length in lengths),
    ]
    notes = []
    for model in report["models"]:
        cells = []
        for entry in model["results"]:
            if entry["skipped"]:
                cells.append("skipped")
            else:
                cells.append("n/a" if entry["loss"] is None else f"{entry['loss']:.4f}")
        lines.append(f"{model['label']:<{width}}" + "".join(f" {cell:>8}" for cell in cells))
        gone = [entry for entry in model["results"] if entry["skipped"]]
        if gone:
            at = ", ".join(str(entry["length"]) for entry in gone)
            notes.append(f"{model['label']}: not run at {at}: {gone[0]['reason']}")
    return "\n".join(lines + notes)


def write_report(report: dict, folder: Path) -> list[Path]:
    """The three files in `folder`, all or none; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    finals = [folder / REPORT_JSON, folder / REPORT_CSV, folder / REPORT_PNG]
    temporaries = [path.with_name(f".{path.name}.partial") for path in finals]
    try:
        temporaries[0].write_text(json.dumps(report, indent=2) + "\n")
        write_csv(report, temporaries[1])
        plot_lengths(report, temporaries[2])
    except BaseException:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, final in zip(temporaries, finals, strict=True):
        os.replace(temporary, final)
    return finals
