"""Composer's Trainer for a validated recipe: every builder's output wired together."""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from composer import Callback, Trainer
from composer.utils import dist
from transformers import PreTrainedTokenizerBase

from mosaic_pretrain.callbacks.data_memory import ReleaseDataMemory
from mosaic_pretrain.callbacks.graceful_stop import GracefulStop
from mosaic_pretrain.callbacks.run_record import RunRecord
from mosaic_pretrain.callbacks.run_tally import RunTally
from mosaic_pretrain.callbacks.stream_samples import StreamSamples
from mosaic_pretrain.config import PretrainConfig
from mosaic_pretrain.config.folders import run_folder
from mosaic_pretrain.config.schema import ConsoleMetrics
from mosaic_pretrain.train.builders import (
    build_callbacks,
    build_compile_config,
    build_composer_model,
    build_console,
    build_dataloader,
    build_evaluator,
    build_loggers,
    build_loss_guard,
    build_optimizer,
    build_tokenizer,
)
from mosaic_pretrain.train.composer_model import MLMComposerModel
from mosaic_pretrain.train.phase_start import load_phase_optimizer_state
from mosaic_pretrain.train.resume import checkpoint_to_resume, recipe_record
from mosaic_pretrain.train.safe_load import composer_loads_checked
from mosaic_pretrain.train.schedules import build_scheduler, stable_checkpoints

logger = logging.getLogger(__name__)


@dataclass
class BuiltRun:
    trainer: Trainer
    model: MLMComposerModel  # unwrapped (the Trainer's may be wrapped for DDP)
    tokenizer: PreTrainedTokenizerBase
    tally: RunTally  # what the closing summary reports


def _stream_samples(config: PretrainConfig) -> list[StreamSamples]:
    """Per-stream sample counts, for a training set mixed from streams."""
    streams = config.train_loader.dataset.streams
    return [StreamSamples(list(streams))] if streams else []


# Callbacks of the layers above (GLUE during pretraining), made for the model and tokenizer built.
MoreCallbacks = Callable[[MLMComposerModel, PreTrainedTokenizerBase], list[Callback]]


def build_trainer(
    config: PretrainConfig, stopper: GracefulStop, more_callbacks: MoreCallbacks = lambda *_: []
) -> BuiltRun:
    """Everything a run needs, wired into Composer's Trainer. Resuming loads the checkpoint."""
    if config.algorithms.fused_layernorm is not None:
        logger.info(
            "algorithms.fused_layernorm (apex in MosaicBERT) is served by our low-precision "
            "LayerNorm, which needs no apex"
        )
    tokenizer = build_tokenizer(config)
    resumed = checkpoint_to_resume(config, run_folder(config)) is not None
    model: MLMComposerModel = build_composer_model(config, tokenizer, resumed)
    device_batch_size = config.global_train_batch_size // dist.get_world_size()
    train_data = build_dataloader(config.train_loader, config, tokenizer, device_batch_size)
    optimizer = build_optimizer(config.optimizer, model)
    if config.model.init_optimizer_state and not resumed:  # a resume loads its own
        load_phase_optimizer_state(optimizer, model, config.model)
    tally, console = RunTally(), build_console(config)
    with composer_loads_checked():  # Composer unpickles a resumed checkpoint as it builds
        trainer = Trainer(
            run_name=config.run_name,
            model=model,
            train_dataloader=train_data,
            eval_dataloader=build_evaluator(config, tokenizer),
            max_duration=config.max_duration,
            eval_interval=config.eval_interval,
            eval_subset_num_batches=config.eval_subset_num_batches,
            optimizers=optimizer,
            schedulers=build_scheduler(config),
            precision=config.precision.value,
            device_train_microbatch_size=config.device_train_microbatch_size,
            # Microbatches weighed by their masked tokens (train/microbatches.py, count_tokens).
            accumulate_train_batch_on_tokens=True,
            seed=config.seed,
            save_folder=config.save_folder,
            save_interval=config.save_interval,
            save_num_checkpoints_to_keep=config.save_num_checkpoints_to_keep,
            save_overwrite=config.save_overwrite,
            compile_config=build_compile_config(config),
            load_path=config.load_path,
            autoresume=config.autoresume,
            # The console is ours (builders.build_console); Composer's logger is the long form.
            progress_bar=False,
            log_to_console=config.log_to_console and config.console_metrics is ConsoleMetrics.all,
            console_log_interval=config.console_log_interval,
            callbacks=[
                *build_callbacks(config.callbacks),
                build_loss_guard(config.loss_guard),
                stopper,
                RunRecord(recipe_record(config)),
                ReleaseDataMemory(),
                *_stream_samples(config),
                *stable_checkpoints(config),
                *more_callbacks(model, tokenizer),
            ],
            loggers=[*build_loggers(config.loggers, run_folder(config)), tally, *console],
        )
    return BuiltRun(trainer, model, tokenizer, tally)
