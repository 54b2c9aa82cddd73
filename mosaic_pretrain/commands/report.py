"""What `train` tells the person at the console: the run and where its files go, before the
first batch; the closing summary (also written as summary.json) when it ends."""

from pathlib import Path

import torch
from composer.core import Time
from composer.utils import dist

from mosaic_pretrain.callbacks.metrics_file import CURVES_FILE, METRICS_FILE
from mosaic_pretrain.config import PretrainConfig
from mosaic_pretrain.config.folders import expand_folder, run_folder
from mosaic_pretrain.train.export import RESOLVED_CONFIG
from mosaic_pretrain.train.init_weights import init_source
from mosaic_pretrain.train.phase_start import checkpoint_source
from mosaic_pretrain.train.resume import checkpoint_to_resume
from mosaic_pretrain.train.summary import (
    SUMMARY_FILE,
    format_summary,
    read_summary,
    run_summary,
    trainer_device,
    write_summary,
)
from mosaic_pretrain.train.trainer import BuiltRun


def run_header(config: PretrainConfig, built: BuiltRun, export_folder: Path | None) -> str:
    """What the run is and where its files go, before the first batch."""
    state = built.trainer.state
    model = built.model.model
    parameters = sum(parameter.numel() for parameter in model.parameters())
    name = config.model.name.value
    if name == "mosaic_bert":
        name += f" {config.model.model_config.preset}"
    lines = [
        f"run {config.run_name}: {name} ({parameters / 1e6:.1f}M "
        f"parameters), {config.precision.value} on {_device_name(state)}; "
        f"max_duration={config.max_duration} of {config.global_train_batch_size} x "
        f"{config.max_seq_len} tokens per batch, {_evaluation(config)}"
    ]
    batch = int(state.timestamp.batch)
    if batch > 0:
        lines.append(f"  continuing at batch {batch:,} from {_checkpoint_name(config)}")
    elif init_source(config.model) is not None:
        lines.append(f"  starting from {_starting_point(config)}")
    folder = run_folder(config)
    if config.save_folder is not None:
        lines.append(
            f"  files: {folder}/ (checkpoints every {config.save_interval}, {RESOLVED_CONFIG}, "
            f"{METRICS_FILE}, {CURVES_FILE}, {SUMMARY_FILE})"
        )
    else:
        lines.append(f"  files: {folder}/ ({METRICS_FILE}, {CURVES_FILE}); no save_folder: "
                     "no checkpoints")  # fmt: skip
    if export_folder is not None:
        lines.append(f"  export at the end: {export_folder}")
    return "\n".join(lines)


def _starting_point(config: PretrainConfig) -> str:
    """The weights a new run starts from: a model directory, or an earlier run's checkpoint."""
    checkpoint = checkpoint_source(config.model)
    if checkpoint is None:
        return f"the weights of {init_source(config.model)}"
    optimizer = " and its optimizer state" if config.model.init_optimizer_state else ""
    return f"a new phase: the weights{optimizer} of checkpoint {checkpoint}"


def _evaluation(config: PretrainConfig) -> str:
    if config.eval_loader is None:
        return "no evaluation (no eval_loader)"
    if Time.from_timestring(config.eval_interval).value == 0:
        return f"no evaluation (eval_interval={config.eval_interval})"
    return f"eval every {config.eval_interval}"


def _device_name(state) -> str:
    device = trainer_device(state)
    if device.type == "cuda":
        return f"{dist.get_world_size()} x {torch.cuda.get_device_name(device)}"
    return "cpu" if dist.get_world_size() == 1 else f"{dist.get_world_size()} cpu processes"


def _checkpoint_name(config: PretrainConfig) -> str:
    checkpoint = checkpoint_to_resume(config, run_folder(config))
    return checkpoint.resolve().name if checkpoint is not None else "its checkpoint"


def closing_summary(config: PretrainConfig, built: BuiltRun, export_folder: Path | None) -> str:
    """The summary of what this session trained (written to summary.json); a rerun of a finished
    run, which trained nothing, shows the summary it finished with."""
    folder = run_folder(config)
    previous = read_summary(folder)
    if built.tally.started is None and previous is not None:
        return (
            f"nothing to train: {config.run_name} reached max_duration={config.max_duration} "
            f"before; its summary ({folder / SUMMARY_FILE}):\n{format_summary(previous)}"
        )
    if built.tally.started is None:  # nothing trained, and no summary from before: count from here
        built.tally.fit_start(built.trainer.state, built.trainer.logger)
    export = export_folder or (
        expand_folder(config.export_folder, config) if config.export_folder else None
    )
    summary = run_summary(config, built.trainer.state, built.tally, folder, export)
    write_summary(folder, summary)
    return format_summary(summary)
