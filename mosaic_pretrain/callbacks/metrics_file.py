"""A local metrics file, always written, and a PNG of the curves at the end of training.

Logged keys: every metric Composer logs (for example `loss/train/total`,
`metrics/eval/LanguageCrossEntropy`, `throughput/tokens_per_sec`, `throughput/device/mfu`,
`lr-DecoupledAdamW/group0`), one JSON object per logging step: `{"step": N, key: value, ...}`.
A resumed run appends to the same file; the plot keeps the last value logged for each step.
"""

import json
import math
from pathlib import Path

from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
PLOTTED = (
    ("loss/train/total", "training MLM loss"),
    ("metrics/eval/LanguageCrossEntropy", "eval MLM loss"),
    ("throughput/tokens_per_sec", "real tokens / s"),
    ("throughput/device/mfu", "MFU"),
)


def finite(value) -> float | None:
    """A logged value as a float; None when it is not a finite number (never written, shown or
    summarised as a result)."""
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class MetricsFile(LoggerDestination):
    """Writes `metrics.jsonl` in `folder` (rank 0) and `curves.png` when training ends."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / METRICS_FILE

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if dist.get_global_rank() != 0:
            return
        numbers = {
            key: number for key, value in metrics.items() if (number := finite(value)) is not None
        }
        if not numbers:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **numbers}) + "\n")

    def fit_end(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() == 0 and self.path.exists():
            plot_curves(self.path, self.folder / CURVES_FILE)


def read_metrics(path: Path) -> dict[str, dict[int, float]]:
    """{key: {step: last value logged at that step}}."""
    series: dict[str, dict[int, float]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        step = record.pop("step")
        for key, value in record.items():
            series.setdefault(key, {})[step] = value
    return series


def plot_curves(metrics_path: Path, png_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(metrics_path)
    panels = [(key, title) for key, title in PLOTTED if key in series]
    figure, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.5 * max(len(panels), 1), 3.5))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for axis, (key, title) in zip(axes, panels, strict=False):
        steps = sorted(series[key])
        axis.plot(
            steps, [series[key][step] for step in steps], marker="." if len(steps) < 30 else ""
        )
        axis.set_title(title)
        axis.set_xlabel("batch")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path
