"""`mosaic-pretrain train`: check a recipe, build its Trainer, fit, report how the run ended."""

import errno
import logging
from pathlib import Path

from composer import Trainer
from composer.utils import dist, reproducibility

from mosaic_pretrain.callbacks.graceful_stop import GracefulStop
from mosaic_pretrain.callbacks.run_record import code_version
from mosaic_pretrain.commands.check import check_recipe
from mosaic_pretrain.commands.report import closing_summary, run_header
from mosaic_pretrain.config import PretrainConfig, to_yaml
from mosaic_pretrain.config.load import recipe_warnings
from mosaic_pretrain.errors import CheckpointError, ConfigError, RunStopped
from mosaic_pretrain.glue.pretraining_points import GlueSweeps, build_glue_sweeps
from mosaic_pretrain.train.checkpoints import repair_checkpoint_folder
from mosaic_pretrain.train.export import (
    RESOLVED_CONFIG,
    run_card,
    save_hf_directory,
    trained_counts,
)
from mosaic_pretrain.train.folders import (
    disk_full_message,
    free_export_folder,
    hold_run_folder,
    run_folder,
    save_resolved_config,
    signal_exit_code,
    stopped_message,
)
from mosaic_pretrain.train.phase_start import pin_checkpoint
from mosaic_pretrain.train.resume import checkpoint_to_resume
from mosaic_pretrain.train.trainer import BuiltRun, build_trainer

__all__ = ["RESOLVED_CONFIG", "run_folder", "train"]

logger = logging.getLogger(__name__)


def train(config: PretrainConfig) -> Trainer:
    """Pretrain as the recipe says; returns the finished Trainer."""
    if config.ablation is not None:
        raise ConfigError(
            f"this recipe sweeps {config.ablation.key} (its `ablation` section): run it with "
            "`mosaic-pretrain ablate`, or set ablation=null to train it once"
        )
    # One run per folder: locked before anything is written there, released however it ends.
    with hold_run_folder(config):
        return _train(config)


def _train(config: PretrainConfig) -> Trainer:
    if config.autoresume and dist.get_global_rank() == 0:
        repair_checkpoint_folder(run_folder(config))
    dist.barrier()  # no rank looks for `latest` before it is repaired
    if checkpoint_to_resume(config, run_folder(config)) is None:
        pin_checkpoint(config.model)  # a new phase: one checkpoint for all that follows
    problems = check_recipe(config)  # everything `mosaic-pretrain check` finds
    if problems:
        raise ConfigError("; ".join(problems), problems)
    if dist.get_global_rank() == 0:
        for warning in recipe_warnings(config):  # legal, but worth a look before compute is spent
            logger.warning(warning)
    # Seeded before anything is built: the model's initial weights come from these RNGs, and
    # the Trainer seeds them only once it is constructed, after the model exists.
    reproducibility.seed_all(config.seed)
    export_folder = free_export_folder(config)
    logger.debug("resolved recipe:\n%s", to_yaml(config))
    save_resolved_config(config)
    stopper = GracefulStop()
    glue_sweeps: list[GlueSweeps] = []

    def glue_callbacks(model, tokenizer) -> list[GlueSweeps]:
        sweeps = build_glue_sweeps(config, model, tokenizer, lambda: stopper.requested is not None)
        glue_sweeps.extend([sweeps] if sweeps is not None else [])
        return glue_sweeps

    built = build_trainer(config, stopper, glue_callbacks)
    trainer = built.trainer
    try:
        if dist.get_global_rank() == 0:
            print(run_header(config, built, export_folder), flush=True)
        _fit(trainer, config)
        if stopper.requested is None and export_folder is not None and dist.get_global_rank() == 0:
            _export(config, built, export_folder)
        for sweeps in glue_sweeps:  # the final point, and the sweeps still to run
            with stopper.listening():
                stopped = stopper.requested is not None
                sweeps.finish(trainer.state, trainer.logger, stopped=stopped)
        if stopper.requested is not None:
            raise RunStopped(stopped_message(config, stopper), signal_exit_code(stopper.requested))
        if dist.get_global_rank() == 0:
            print(closing_summary(config, built, export_folder), flush=True)
    except BaseException:
        # The caller never gets this Trainer to close: close it here (loggers flushed, loader
        # workers stopped, the datasets' shared memory freed) rather than at interpreter exit,
        # which in a process that goes on (an ablation's next run) is much later.
        trainer.close()
        raise
    return trainer


def _export(config: PretrainConfig, built: BuiltRun, folder: Path) -> None:
    model = built.model.model.eval()
    trained = trained_counts(built.trainer.state.timestamp.state_dict())
    made_by = "`mosaic-pretrain train` (exported at the end of training)"
    card = run_card(
        config, model, built.tokenizer, made_by, trained, run_folder(config), code_version(),
        config.export_with_code,
    )  # fmt: skip
    save_hf_directory(model, built.tokenizer, folder, card, config.export_with_code)


def _fit(trainer: Trainer, config: PretrainConfig) -> None:
    """`fit()`; a run resumed at its max_duration (which Composer refuses to fit) has nothing to
    train, and goes on to what follows training (export, GLUE sweeps still to run)."""
    if not trainer.state.timestamp < trainer.state.max_duration:
        return
    try:
        trainer.fit()
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        raise CheckpointError(disk_full_message(config, error)) from None
