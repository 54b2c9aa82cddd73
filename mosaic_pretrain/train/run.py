"""`mosaic-pretrain train`: build everything from a validated recipe and run Composer's Trainer."""

import errno
import logging
import os
import signal
from pathlib import Path

from composer import Trainer
from composer.callbacks import LRMonitor, MemoryMonitor, OptimizerMonitor, SpeedMonitor
from composer.utils import dist, reproducibility

from mosaic_pretrain.callbacks.graceful_stop import GracefulStop
from mosaic_pretrain.callbacks.loss_guard import LossGuard
from mosaic_pretrain.callbacks.metrics_file import MetricsFile
from mosaic_pretrain.callbacks.run_record import RunRecord
from mosaic_pretrain.config import PretrainConfig, to_yaml
from mosaic_pretrain.config.schema import CallbacksSection, LoggersSection, LossGuardSection
from mosaic_pretrain.errors import CheckpointError, ConfigError, RunStopped
from mosaic_pretrain.train.builders import (
    build_composer_model,
    build_dataloader,
    build_evaluator,
    build_optimizer,
    build_scheduler,
    build_tokenizer,
)
from mosaic_pretrain.train.check import check_recipe
from mosaic_pretrain.train.checkpoints import latest_link, repair_checkpoint_folder
from mosaic_pretrain.train.export import RESOLVED_CONFIG, save_hf_directory
from mosaic_pretrain.train.resume import recipe_record

logger = logging.getLogger(__name__)


def build_callbacks(section: CallbacksSection) -> list:
    callbacks = []
    if section.speed_monitor is not None:
        callbacks.append(
            SpeedMonitor(
                window_size=section.speed_monitor.window_size,
                gpu_flops_available=section.speed_monitor.gpu_flops_available,
            )
        )
    if section.lr_monitor is not None:
        callbacks.append(LRMonitor())
    if section.memory_monitor is not None:
        callbacks.append(MemoryMonitor())
    if section.optimizer_monitor is not None:
        monitor = section.optimizer_monitor
        callbacks.append(
            OptimizerMonitor(
                log_optimizer_metrics=monitor.log_optimizer_metrics,
                batch_log_interval=monitor.batch_log_interval,
            )
        )
    return callbacks


def build_loss_guard(section: LossGuardSection) -> LossGuard:
    return LossGuard(
        action=section.action.value,
        spike_factor=section.spike_factor,
        window=section.window,
        max_skipped_batches=section.max_skipped_batches,
    )


def _expand(template: str, config: PretrainConfig) -> Path:
    """A folder from the recipe, with its `{run_name}` filled in."""
    return Path(template.format(run_name=config.run_name))


def run_folder(config: PretrainConfig) -> Path:
    """Where the run's own files go: the checkpoint folder, else runs/RUN_NAME."""
    return _expand(config.save_folder or "runs/{run_name}", config)


def build_loggers(section: LoggersSection, folder: Path) -> list:
    loggers = [MetricsFile(folder)]
    if section.wandb is None:
        return loggers
    try:
        import wandb  # noqa: F401
        from composer.loggers import WandBLogger
    except ImportError:
        raise ConfigError(
            "loggers.wandb needs the wandb package: pip install 'mosaic_pretrain[wandb]'"
        ) from None
    if section.wandb.project is None:
        os.environ.setdefault("WANDB_MODE", "offline")  # no project: never send anything
    return [
        *loggers,
        WandBLogger(
            project=section.wandb.project,
            entity=section.wandb.entity,
            tags=list(section.wandb.tags),
        ),
    ]


def save_resolved_config(config: PretrainConfig) -> None:
    if config.save_folder is None or dist.get_global_rank() != 0:
        return
    folder = run_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESOLVED_CONFIG).write_text(to_yaml(config))


def free_export_folder(config: PretrainConfig) -> Path | None:
    """Where to export at the end; refused now if taken, not after hours of training."""
    if config.export_folder is None:
        return None
    folder = _expand(config.export_folder, config)
    if folder.exists():
        raise ConfigError(
            f"export_folder {folder} already exists; remove it or set another export_folder"
        )
    return folder


def check_save_folder(config: PretrainConfig) -> None:
    """A run never writes over another run's checkpoints unless the recipe says so."""
    if config.save_folder is None or config.autoresume or config.save_overwrite:
        return
    folder = run_folder(config)
    if folder.is_dir() and any(folder.glob("*.pt")):
        raise ConfigError(
            f"save_folder {folder} already holds checkpoints; set autoresume: true to continue "
            "that run, choose another save_folder, or set save_overwrite: true to replace them"
        )


def _compile_config(config: PretrainConfig) -> dict | None:
    if config.compile is None:
        return None
    options = {"backend": config.compile.backend, "dynamic": config.compile.dynamic}
    if config.compile.mode is not None:
        options["mode"] = config.compile.mode
    return options


def _disk_full_message(config: PretrainConfig, error: OSError) -> str:
    kept = ""
    if config.save_folder is not None:
        link = latest_link(run_folder(config))
        kept = (
            f"; the last complete checkpoint is kept ({link.resolve().name})"
            if link.exists()
            else ""
        )
    return (
        f"no space left on the device while writing {error.filename or 'a file'}{kept}; free "
        "space, then rerun with autoresume: true (a checkpoint cut short is set aside)"
    )


def _stopped_message(config: PretrainConfig, stopper: GracefulStop) -> str:
    where = "no save_folder, so nothing was saved"
    if config.save_folder is not None:
        link = latest_link(run_folder(config))
        if link.exists():
            where = (
                f"checkpoint {link.resolve().name} saved in {run_folder(config)}; rerun with "
                "autoresume: true to continue"
            )
    return f"stopped by {stopper.requested} after batch {stopper.stopped_after_batch}; {where}"


def _exit_code(signal_name: str) -> int:
    """The shell's code for a process ended by that signal (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(getattr(signal, signal_name, signal.SIGTERM))


def train(config: PretrainConfig) -> Trainer:
    """Pretrain as the recipe says; returns the finished Trainer."""
    # Seeded before anything is built: the model's initial weights come from these RNGs, and
    # the Trainer seeds them only once it is constructed, after the model exists.
    if config.autoresume and dist.get_global_rank() == 0:
        repair_checkpoint_folder(run_folder(config))  # before any rank looks for `latest`
    problems = check_recipe(config)  # everything `mosaic-pretrain check` finds
    if problems:
        raise ConfigError("; ".join(problems), problems)
    reproducibility.seed_all(config.seed)
    export_folder = free_export_folder(config)
    logger.info("resolved recipe:\n%s", to_yaml(config))
    if config.algorithms.fused_layernorm is not None:
        logger.info(
            "algorithms.fused_layernorm (apex in MosaicBERT) is served by our low-precision "
            "LayerNorm, which needs no apex"
        )
    tokenizer = build_tokenizer(config)
    model = build_composer_model(config, tokenizer)
    device_batch_size = config.global_train_batch_size // dist.get_world_size()
    train_data = build_dataloader(config.train_loader, config, tokenizer, device_batch_size)
    optimizer = build_optimizer(config.optimizer, model)
    save_resolved_config(config)
    stopper = GracefulStop()
    trainer = Trainer(
        run_name=config.run_name,
        model=model,
        train_dataloader=train_data,
        eval_dataloader=build_evaluator(config, tokenizer),
        max_duration=config.max_duration,
        eval_interval=config.eval_interval,
        optimizers=optimizer,
        schedulers=build_scheduler(config.scheduler),
        precision=config.precision.value,
        device_train_microbatch_size=config.device_train_microbatch_size,
        seed=config.seed,
        save_folder=config.save_folder,
        save_interval=config.save_interval,
        save_num_checkpoints_to_keep=config.save_num_checkpoints_to_keep,
        save_overwrite=config.save_overwrite,
        compile_config=_compile_config(config),
        load_path=config.load_path,
        autoresume=config.autoresume,
        progress_bar=config.progress_bar,
        log_to_console=config.log_to_console,
        console_log_interval=config.console_log_interval,
        callbacks=[
            *build_callbacks(config.callbacks),
            build_loss_guard(config.loss_guard),
            stopper,
            RunRecord(recipe_record(config)),
        ],
        loggers=build_loggers(config.loggers, run_folder(config)),
    )
    try:
        trainer.fit()
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        raise CheckpointError(_disk_full_message(config, error)) from None
    if stopper.requested is not None:
        raise RunStopped(_stopped_message(config, stopper), _exit_code(stopper.requested))
    if export_folder is not None and dist.get_global_rank() == 0:
        save_hf_directory(model.model.eval(), tokenizer, export_folder)
    return trainer
