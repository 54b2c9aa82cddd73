"""The checkpoint where a warmup-stable-decay run leaves its stable phase, kept for good.

A WSD run's weights at the end of the stable phase are the point to branch from: decaying them
later (a longer run), or decaying them again with another length or shape. The regular saver's
checkpoints rotate (save_num_checkpoints_to_keep), so this one is written on its own, into
SAVE_FOLDER/stable/, where neither the rotation nor autoresume's `latest` link looks.
"""

import logging
import shutil
from pathlib import Path

from composer import Callback, Event, State, Time, TimeUnit
from composer.loggers import Logger
from composer.utils import checkpoint

logger = logging.getLogger(__name__)

STABLE_FOLDER = "stable"


def decay_start(t_decay: str, max_duration: Time) -> Time:
    """Where the decay begins: `t_decay` before the end, in max_duration's unit."""
    decay = Time.from_timestring(t_decay)
    if decay.unit is TimeUnit.DURATION:
        length = int(decay.value * max_duration.value)
    elif decay.unit is max_duration.unit:
        length = int(decay.value)
    else:  # config validation refuses this; a bug if it is reached
        raise ValueError(f"t_decay {t_decay} is not in dur or {max_duration.unit.value}")
    return Time(max(0, int(max_duration.value) - length), max_duration.unit)


class StableCheckpoint(Callback):
    """Saves `SAVE_FOLDER/stable/ep{epoch}-ba{batch}-rank{rank}.pt` after the batch that reaches
    the start of the decay (every rank takes part, as in Composer's own saver), with a copy of
    the run's recipe beside it, so that `export` and `eval-lengths` read it as they read the
    save folder's checkpoints.

    The start comes from the recipe's max_duration, not the State's: a stop asked for (SIGTERM,
    Ctrl-C) ends the run early by shortening the State's, which must not move the decay."""

    def __init__(
        self, save_folder: str | Path, t_decay: str, max_duration: str, recipe: Path | None
    ):
        self.folder = Path(save_folder) / STABLE_FOLDER
        self.start = decay_start(t_decay, Time.from_timestring(max_duration))
        self.recipe = recipe
        self.saved: list[str] = []

    def run_event(self, event: Event, state: State, logger_: Logger) -> None:
        if event is not Event.BATCH_CHECKPOINT:
            return
        start = self.start
        now = state.timestamp.get(start.unit)
        before = state.previous_timestamp.get(start.unit) if state.previous_timestamp else now
        if not before < start <= now:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        written = checkpoint.save_checkpoint(
            state, str(self.folder / "ep{epoch}-ba{batch}-rank{rank}.pt")
        )
        if written is not None:  # rank 0
            self.saved.append(str(written))
            if self.recipe is not None and self.recipe.is_file():
                shutil.copyfile(self.recipe, self.folder / self.recipe.name)
            logger.info("end of the stable phase: checkpoint kept at %s", written)
