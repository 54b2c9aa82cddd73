"""The checkpoint where a warmup-stable-decay run leaves its stable phase, kept for good.

A WSD run's weights at the end of the stable phase are the point to branch from: decaying them
later (a longer run), or decaying them again with another length or shape. The regular saver's
checkpoints rotate (save_num_checkpoints_to_keep), so this one is written on its own, into
SAVE_FOLDER/stable/, where neither the rotation nor autoresume's `latest` link looks.
"""

import logging
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
    the start of the decay (every rank takes part, as in Composer's own saver)."""

    def __init__(self, save_folder: str | Path, t_decay: str):
        self.folder = Path(save_folder) / STABLE_FOLDER
        self.t_decay = t_decay
        self.saved: list[str] = []

    def run_event(self, event: Event, state: State, logger_: Logger) -> None:
        if event is not Event.BATCH_CHECKPOINT or state.max_duration is None:
            return
        start = decay_start(self.t_decay, state.max_duration)
        now = state.timestamp.get(start.unit)
        before = state.previous_timestamp.get(start.unit) if state.previous_timestamp else now
        if not before < start <= now:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        written = checkpoint.save_checkpoint(
            state, str(self.folder / "ep{epoch}-ba{batch}-rank{rank}.pt")
        )
        if written is not None:
            self.saved.append(str(written))
            logger.info("end of the stable phase: checkpoint kept at %s", written)
