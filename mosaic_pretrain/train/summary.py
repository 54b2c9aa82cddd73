"""A run's closing summary: what it trained, how well and how fast, and where its files are.
Printed when the run ends and kept as RUN/summary.json, so a rerun of a finished run (with
autoresume) can show it again and knows its export is already written.

summary.json keys: `run_name`, `finished_at` (UTC, ISO), `device` (see `device_info`),
`totals` (batches, samples, real tokens, over every session), `session` (batches, samples,
tokens, wall_seconds, real_tokens_per_second of this session: tokens trained / wall time, eval
and checkpoints included), `train_step_tokens_per_second` (mean of the speed monitor's windows),
`mfu` (mean of the logged values; null where no peak is known), `train` and `eval`
(`loss`, `masked_accuracy`, `batch`; `eval` is null when nothing was evaluated), `evaluated`,
`eval_interval`, `eval_loader` (whether the recipe has one), `files` (paths: checkpoints,
latest_checkpoint, export, metrics, curves, recipe, summary; null for what is not there).
"""

import datetime
import json
import os
from pathlib import Path

import torch
from composer.core import State, Time, TimeUnit

from mosaic_pretrain.callbacks.console import clock, compact
from mosaic_pretrain.callbacks.metrics_file import CURVES_FILE, METRICS_FILE
from mosaic_pretrain.callbacks.run_tally import RunTally
from mosaic_pretrain.config import PretrainConfig
from mosaic_pretrain.device_info import device_description
from mosaic_pretrain.train.checkpoints import latest_link
from mosaic_pretrain.train.export import RESOLVED_CONFIG

SUMMARY_FILE = "summary.json"


def run_summary(
    config: PretrainConfig, state: State, tally: RunTally, folder: Path, export: Path | None
) -> dict:
    stamp = state.timestamp
    latest = latest_link(folder)
    evaluated = tally.eval_batch is not None
    return {
        "run_name": config.run_name,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_description(trainer_device(state)),
        "totals": {
            "batches": int(stamp.batch),
            "samples": int(stamp.sample),
            "tokens": int(stamp.token),
            "epochs": int(stamp.epoch),
        },
        "session": tally.session(state),
        "train_step_tokens_per_second": tally.mean(tally.step_speeds),
        "mfu": tally.mean(tally.mfus),
        "train": {**tally.train, "batch": tally.train_batch} if tally.train else None,
        "eval": {**tally.eval, "batch": tally.eval_batch} if evaluated else None,
        "evaluated": evaluated,
        "eval_interval": config.eval_interval,
        "eval_loader": config.eval_loader is not None,
        "files": {
            "checkpoints": str(folder) if config.save_folder is not None else None,
            "latest_checkpoint": str(latest.resolve()) if latest.exists() else None,
            "export": str(export) if export is not None and export.exists() else None,
            "metrics": _existing(folder / METRICS_FILE),
            "curves": _existing(folder / CURVES_FILE),
            "recipe": _existing(folder / RESOLVED_CONFIG),
            "summary": str(folder / SUMMARY_FILE),
        },
    }


def trainer_device(state: State) -> torch.device:
    """The torch device the Trainer trains on (Composer keeps it on its Device object)."""
    return getattr(state.device, "_device", torch.device("cpu"))


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None


def write_summary(folder: Path, summary: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SUMMARY_FILE
    temporary = path.with_name(f".{SUMMARY_FILE}.tmp")
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(temporary, path)
    return path


def read_summary(folder: Path) -> dict | None:
    """The summary a finished run left in `folder` (None when there is none, or it is unreadable:
    it is a report, never a reason to refuse a run)."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


def finished_with_export(config: PretrainConfig, folder: Path, export: Path) -> bool:
    """The run in `folder` reached the recipe's max_duration, its latest checkpoint is the one it
    ended with, and `export` is the export it wrote then: a rerun has nothing to add to it."""
    summary = read_summary(folder)
    if summary is None or summary.get("files", {}).get("export") != str(export):
        return False
    latest = latest_link(folder)
    if not latest.exists() or str(latest.resolve()) != summary["files"].get("latest_checkpoint"):
        return False
    return reached(config.max_duration, summary["totals"])


def reached(max_duration: str, totals: dict) -> bool:
    """Whether the totals of a run are at or past `max_duration` (e.g. 60ba, 286720000sp)."""
    duration = Time.from_timestring(max_duration)
    done = {
        TimeUnit.BATCH: totals["batches"],
        TimeUnit.SAMPLE: totals["samples"],
        TimeUnit.TOKEN: totals["tokens"],
        TimeUnit.EPOCH: totals.get("epochs", 0),
    }.get(duration.unit)
    return done is not None and done >= duration.value


def format_summary(summary: dict) -> str:
    """The closing summary as a short aligned block for the console."""
    totals, session = summary["totals"], summary["session"]
    rows = [
        ("trained", _trained(totals, session)),
        ("train", _scores(summary["train"], "last logged")),
        ("eval", _eval(summary)),
        ("speed", _speed(summary)),
    ]
    names = {
        "checkpoints": "checkpoints",
        "latest_checkpoint": "latest",
        "export": "export",
        "metrics": "metrics",
        "curves": "curves",
        "recipe": "recipe",
        "summary": "summary",
    }
    files = {**summary["files"]}
    if files["latest_checkpoint"]:  # its folder is on the line above
        files["latest_checkpoint"] = Path(files["latest_checkpoint"]).name
    rows += [(label, files[key]) for key, label in names.items() if files[key]]
    width = max(len(label) for label, _ in rows)
    lines = [f"run {summary['run_name']} finished ({summary['finished_at']})"]
    lines += [f"  {label:<{width}}  {text}" for label, text in rows]
    return "\n".join(lines)


def _trained(totals: dict, session: dict) -> str:
    text = (
        f"{totals['batches']:,} batches, {totals['samples']:,} samples, "
        f"{totals['tokens']:,} real tokens"
    )
    if session["batches"] != totals["batches"]:
        text += f" ({session['batches']:,} batches in this session)"
    return text + f"; wall time {clock(session['wall_seconds'])}"


def _scores(scores: dict | None, when: str) -> str:
    if not scores:
        return "nothing logged"
    figures = []
    if scores.get("loss") is not None:
        figures.append(f"MLM loss {scores['loss']:.4f}")
    if scores.get("masked_accuracy") is not None:
        figures.append(f"masked accuracy {scores['masked_accuracy']:.2%}")
    if not figures:
        return f"no finite value (the loss diverged?) at batch {scores['batch']}"
    return ", ".join(figures) + f" ({when}, batch {scores['batch']})"


def _eval(summary: dict) -> str:
    if not summary["evaluated"]:
        why = (
            f"eval_interval={summary['eval_interval']}"
            if summary.get("eval_loader", True)
            else "the recipe has no eval_loader"
        )
        return f"nothing was evaluated in this session ({why})"
    return _scores(summary["eval"], "evaluation")


def _speed(summary: dict) -> str:
    session = summary["session"]
    parts = []
    if session["real_tokens_per_second"] is not None:
        parts.append(f"{compact(session['real_tokens_per_second'])} real tokens/s over the session")
    if summary["train_step_tokens_per_second"] is not None:
        parts.append(f"{compact(summary['train_step_tokens_per_second'])}/s while stepping")
    if summary["mfu"] is not None:
        parts.append(f"MFU {summary['mfu']:.1%}")
    else:
        parts.append("MFU unknown (no peak FLOP/s known for this device)")
    return ", ".join(parts)
