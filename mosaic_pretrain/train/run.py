"""`mosaic-pretrain train`: build everything from a validated recipe and run Composer's Trainer."""

import errno
import logging

from composer import Trainer
from composer.utils import dist, reproducibility

from mosaic_pretrain.callbacks.graceful_stop import GracefulStop
from mosaic_pretrain.callbacks.run_record import RunRecord
from mosaic_pretrain.config import PretrainConfig, to_yaml
from mosaic_pretrain.errors import CheckpointError, ConfigError, RunStopped
from mosaic_pretrain.train.builders import (
    build_callbacks,
    build_compile_config,
    build_composer_model,
    build_dataloader,
    build_evaluator,
    build_glue_sweeps,
    build_loggers,
    build_loss_guard,
    build_optimizer,
    build_scheduler,
    build_tokenizer,
)
from mosaic_pretrain.train.check import check_recipe
from mosaic_pretrain.train.checkpoints import repair_checkpoint_folder
from mosaic_pretrain.train.export import RESOLVED_CONFIG, save_hf_directory
from mosaic_pretrain.train.folders import (
    disk_full_message,
    free_export_folder,
    run_folder,
    save_resolved_config,
    signal_exit_code,
    stopped_message,
)
from mosaic_pretrain.train.resume import recipe_record

__all__ = ["RESOLVED_CONFIG", "run_folder", "train"]

logger = logging.getLogger(__name__)


def train(config: PretrainConfig) -> Trainer:
    """Pretrain as the recipe says; returns the finished Trainer."""
    if config.autoresume and dist.get_global_rank() == 0:
        repair_checkpoint_folder(run_folder(config))  # before any rank looks for `latest`
    problems = check_recipe(config)  # everything `mosaic-pretrain check` finds
    if problems:
        raise ConfigError("; ".join(problems), problems)
    # Seeded before anything is built: the model's initial weights come from these RNGs, and
    # the Trainer seeds them only once it is constructed, after the model exists.
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
    glue_sweeps = build_glue_sweeps(config, model, tokenizer, lambda: stopper.requested is not None)
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
        compile_config=build_compile_config(config),
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
            *([glue_sweeps] if glue_sweeps is not None else []),
        ],
        loggers=build_loggers(config.loggers, run_folder(config)),
    )
    _fit(trainer, config)
    if stopper.requested is None and export_folder is not None and dist.get_global_rank() == 0:
        save_hf_directory(model.model.eval(), tokenizer, export_folder)
    if glue_sweeps is not None:  # the final point, and the sweeps still to run or to wait for
        with stopper.listening():
            glue_sweeps.finish(trainer.state, trainer.logger, stopped=stopper.requested is not None)
    if stopper.requested is not None:
        raise RunStopped(stopped_message(config, stopper), signal_exit_code(stopper.requested))
    return trainer


def _fit(trainer: Trainer, config: PretrainConfig) -> None:
    """`fit()`; a run resumed at its max_duration (which Composer refuses to fit) has nothing to
    train, and goes on to what follows training (export, GLUE sweeps still to run)."""
    if not trainer.state.timestamp < trainer.state.max_duration:
        logger.info("already at max_duration=%s: nothing to train", config.max_duration)
        return
    try:
        trainer.fit()
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        raise CheckpointError(disk_full_message(config, error)) from None
