"""What the console shows while a run trains: the figures a person watching it looks for, one
line at a time. Everything logged still goes to `metrics.jsonl` and W&B in full; this only picks.

Two forms (`progress_bar` in the recipe; null picks by whether the stream is a terminal):
- live: one tqdm progress line, updated every batch, with the figures as its postfix;
- lines: one line every `console_log_interval` batches (and at the last), for a log file, CI or a
  cluster job, e.g.
  `[batch 10/60  16.7%] tokens 36.8k | loss 9.045 | acc 6.86% | grad 2.072 | lr 9.0e-04 |
  1.73k tok/s | elapsed 0:00:24 | ETA 0:01:58`.
An evaluation's result is one line in both forms. Only global rank 0 prints.

Shown keys (each when logged): `loss/train/total`, `metrics/train/MaskedAccuracy`,
`l2_norm/grad/global` (per-parameter norms are never shown), `lr-DecoupledAdamW/group0`,
`throughput/tokens_per_sec` (real tokens), `throughput/device/mfu`, and after evaluation
`metrics/eval/LanguageCrossEntropy` and `metrics/eval/MaskedAccuracy`.
"""

import sys
import time
from typing import TextIO

from composer.core import State, Time, TimeUnit
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

from mosaic_pretrain.callbacks.metrics_file import finite

TRAIN_LOSS = "loss/train/total"
TRAIN_ACCURACY = "metrics/train/MaskedAccuracy"
GRAD_NORM = "l2_norm/grad/global"
LEARNING_RATE = "lr-DecoupledAdamW/group0"
TOKENS_PER_SECOND = "throughput/tokens_per_sec"
MFU = "throughput/device/mfu"
EVAL_LOSS = "metrics/eval/LanguageCrossEntropy"
EVAL_ACCURACY = "metrics/eval/MaskedAccuracy"


def compact(number: float) -> str:
    """1234567 -> 1.23M: counts and rates read at a glance."""
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            return f"{number / limit:.3g}{suffix}"
    return f"{number:.3g}"


def clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_figures(metrics: dict) -> list[str]:
    """The training figures of one console line, in a fixed order, those logged only."""
    shown = []
    for key, label, form in (
        (TRAIN_LOSS, "loss", "{:.4g}"),
        (TRAIN_ACCURACY, "acc", "{:.2%}"),
        (GRAD_NORM, "grad", "{:.4g}"),
        (LEARNING_RATE, "lr", "{:.1e}"),
    ):
        value = finite(metrics.get(key))
        if value is not None:
            shown.append(f"{label} {form.format(value)}")
    speed = finite(metrics.get(TOKENS_PER_SECOND))
    if speed is not None:
        shown.append(f"{compact(speed)} tok/s")
    mfu = finite(metrics.get(MFU))
    if mfu is not None:
        shown.append(f"MFU {mfu:.1%}")
    return shown


def eval_line(batch: int, metrics: dict) -> str:
    loss, accuracy = finite(metrics.get(EVAL_LOSS)), finite(metrics.get(EVAL_ACCURACY))
    figures = [f"loss {loss:.4f}"] if loss is not None else []
    figures += [f"acc {accuracy:.2%}"] if accuracy is not None else []
    return f"[eval @ batch {batch}] " + (" | ".join(figures) or "no metric")


class ConsoleProgress(LoggerDestination):
    def __init__(
        self,
        interval: str = "1ba",
        live: bool | None = None,
        total_batches: int | None = None,
        stream: TextIO | None = None,
    ):
        parsed = Time.from_timestring(interval)
        if parsed.unit is not TimeUnit.BATCH or parsed.value < 1:
            raise ValueError(f"console_log_interval must be a number of batches, not {interval}")
        self.interval = parsed.value
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.total_batches = total_batches
        self.metrics: dict = {}
        self.bar = None
        self.started: float | None = None
        self.first_batch = 0  # a resumed run's ETA counts only this session's batches
        self.first_done = 0.0
        self.last_printed = -1

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.metrics.update(metrics)

    def _printing(self) -> bool:
        return dist.get_global_rank() == 0

    def fit_start(self, state: State, logger: Logger) -> None:
        self.started = time.monotonic()
        self.first_batch = int(state.timestamp.batch)
        self.first_done = _fraction_done(state) or 0.0
        if self.live and self._printing():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.total_batches,
                initial=self.first_batch,
                unit="ba",
                desc="train",
                file=self.stream,
                dynamic_ncols=True,
            )

    def batch_end(self, state: State, logger: Logger) -> None:
        if not self._printing():
            return
        batch = int(state.timestamp.batch)
        if self.bar is not None:
            self.bar.update(batch - self.bar.n)
            figures = [
                f"tokens {compact(int(state.timestamp.token))}",
                *train_figures(self.metrics),
            ]
            self.bar.set_postfix_str(" | ".join(figures), refresh=False)
        elif batch % self.interval == 0 or batch in (self.first_batch + 1, self.total_batches):
            self._print(self.train_line(state))
            self.last_printed = batch

    def eval_end(self, state: State, logger: Logger) -> None:
        if self._printing():
            self._print(eval_line(int(state.timestamp.batch), self.metrics))

    def fit_end(self, state: State, logger: Logger) -> None:
        if not self._printing():
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.first_batch < int(state.timestamp.batch) != self.last_printed:
            self._print(self.train_line(state))

    def close(self, state: State, logger: Logger) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def train_line(self, state: State) -> str:
        batch = int(state.timestamp.batch)
        where = f"batch {batch}"
        fraction = _fraction_done(state)
        if self.total_batches is not None:
            where += f"/{self.total_batches}"
        if fraction is not None:
            where += f"  {fraction:.1%}"
        figures = self.figures(state)
        if self.started is not None:
            elapsed = time.monotonic() - self.started
            figures.append(f"elapsed {clock(elapsed)}")
            eta = _eta(elapsed, batch - self.first_batch, fraction, self.first_done)
            if eta is not None:
                figures.append(f"ETA {clock(eta)}")
        return f"[{where}] " + " | ".join(figures)

    def figures(self, state: State) -> list[str]:
        return [f"tokens {compact(int(state.timestamp.token))}", *train_figures(self.metrics)]

    def _print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)


def _fraction_done(state: State) -> float | None:
    """How much of max_duration is done, in its own unit."""
    elapsed = state.get_elapsed_duration()
    return None if elapsed is None else min(float(elapsed.value), 1.0)


def _eta(elapsed: float, batches: int, fraction: float | None, first: float) -> float | None:
    """Seconds left at this session's pace (None before a batch has finished)."""
    if fraction is None or batches <= 0 or fraction <= first:
        return None
    return elapsed * (1.0 - fraction) / (fraction - first)
