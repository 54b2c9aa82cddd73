"""Where a run's files go, the checks that it never writes over another run's (its lock on the
folder among them), and what a run that ended early left there (for its one-line message)."""

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from composer.utils import dist, get_device

from mosaic_pretrain.config import PretrainConfig, to_yaml
from mosaic_pretrain.config.folders import expand_folder, run_folder, run_folder_lock
from mosaic_pretrain.errors import ConfigError, FolderInUseError, MosaicPretrainError, first_line
from mosaic_pretrain.train.checkpoints import latest_link
from mosaic_pretrain.train.export import RESOLVED_CONFIG
from mosaic_pretrain.train.summary import finished_with_export

if TYPE_CHECKING:
    from mosaic_pretrain.callbacks.graceful_stop import GracefulStop


@contextmanager
def hold_run_folder(config: PretrainConfig) -> Iterator[None]:
    """The run's lock on its folder, from before anything is written there until the run ends.

    Rank 0 takes it for the run; the other ranks wait for its verdict and, when it was refused,
    raise the same one-line error, so that no rank writes first and none is left waiting. The
    process group is started here for that, with the device the Trainer picks (it finds it
    ready)."""
    lock = run_folder_lock(config)
    if dist.get_world_size() == 1:
        with lock:
            yield
        return
    dist.initialize_dist(get_device(None))
    verdict: list[str | None] = [None]
    failed = None
    if dist.get_global_rank() == 0:
        try:
            lock.acquire()
        except Exception as error:  # every rank must hear of it, or the others wait forever
            failed = error
            verdict = [
                str(error)
                if isinstance(error, MosaicPretrainError)
                else f"rank 0 could not lock {lock.what}: {first_line(error)}"
            ]
    dist.broadcast_object_list(verdict, src=0)
    if failed is not None:
        raise failed
    if verdict[0] is not None:
        raise FolderInUseError(verdict[0])
    try:
        yield
    finally:
        lock.release()  # on the other ranks: nothing to release


def save_resolved_config(config: PretrainConfig) -> None:
    if config.save_folder is None or dist.get_global_rank() != 0:
        return
    folder = run_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESOLVED_CONFIG).write_text(to_yaml(config))


def free_export_folder(config: PretrainConfig) -> Path | None:
    """Where to export at the end; refused now if taken, not after hours of training. None: no
    export to write (none asked for, or a finished run's own, rerun with autoresume)."""
    if config.export_folder is None:
        return None
    folder = expand_folder(config.export_folder, config)
    if not folder.exists():
        return folder
    if config.autoresume and finished_with_export(config, run_folder(config), folder):
        return None  # this run's own export, written when it finished: nothing to redo
    raise ConfigError(
        f"export_folder {folder} already exists; remove it or set another export_folder"
    )


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


def disk_full_message(config: PretrainConfig, error: OSError) -> str:
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


def stopped_message(config: PretrainConfig, stopper: "GracefulStop") -> str:
    where = "no save_folder, so nothing was saved"
    if config.save_folder is not None:
        link = latest_link(run_folder(config))
        if link.exists():
            where = (
                f"checkpoint {link.resolve().name} saved in {run_folder(config)}; rerun with "
                "autoresume: true to continue"
            )
    when = (
        f"after batch {stopper.stopped_after_batch}"
        if stopper.stopped_after_batch is not None
        else "after training, during the GLUE sweeps"
    )
    return f"stopped by {stopper.requested} {when}; {where}"


def signal_exit_code(signal_name: str) -> int:
    """The shell's code for a process ended by that signal (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(getattr(signal, signal_name, signal.SIGTERM))
