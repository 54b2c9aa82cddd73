"""The learning-rate schedules a recipe names (`scheduler.name`), as Composer schedulers.

Composer provides linear and cosine decay with warmup; warmup-stable-decay (WSD: warmup to the
peak, hold it, then decay over the run's last stretch; Hu et al. 2024, MiniCPM; Haegele et al.
2024) it does not, so it is written here as a Composer scheduler: a function of the run's time,
which a resumed run therefore continues exactly.
"""

import math

from composer.core import State, Time, TimeUnit
from composer.optim import (
    ComposerScheduler,
    CosineAnnealingWithWarmupScheduler,
    LinearWithWarmupScheduler,
)

from mosaic_pretrain.callbacks.stable_checkpoint import StableCheckpoint, decay_start
from mosaic_pretrain.config import PretrainConfig
from mosaic_pretrain.config.folders import run_folder
from mosaic_pretrain.config.schema import DecayShape, SchedulerName
from mosaic_pretrain.train.export import RESOLVED_CONFIG

DEFAULT_T_DECAY = "0.2dur"
DEFAULT_DECAY_SHAPE = DecayShape.linear


def decay_shape_value(shape: DecayShape, x: float) -> float:
    """The share of the way from alpha_f up to the peak left at decay progress x in [0, 1]."""
    if shape is DecayShape.linear:
        return 1.0 - x
    if shape is DecayShape.cosine:
        return 0.5 * (1.0 + math.cos(math.pi * x))
    return 1.0 - math.sqrt(x)


class WarmupStableDecayScheduler(ComposerScheduler):
    """Multiplier t/t_warmup in warmup, 1 in the stable phase, then
    alpha_f + (1 - alpha_f) * shape(x) with x the fraction of the decay done."""

    def __init__(self, t_warmup: str, t_decay: str, alpha_f: float, shape: DecayShape):
        self.t_warmup = Time.from_timestring(t_warmup)
        self.t_decay = t_decay
        self.alpha_f = alpha_f
        self.shape = shape

    def __call__(self, state: State, ssr: float = 1.0) -> float:
        assert state.max_duration is not None, "schedulers run with a max_duration"
        warmup = self.t_warmup
        if warmup.unit is TimeUnit.DURATION:
            warmup = Time(int(warmup.value * state.max_duration.value), state.max_duration.unit)
        if warmup.value > 0 and state.timestamp < warmup:
            return state.timestamp.get(warmup.unit).value / warmup.value
        start = decay_start(self.t_decay, state.max_duration)
        now = state.timestamp.get(start.unit).value
        length = state.max_duration.value - start.value
        if now < start.value or length <= 0:
            return 1.0
        x = min(1.0, (now - start.value) / length)
        return self.alpha_f + (1.0 - self.alpha_f) * decay_shape_value(self.shape, x)


def in_run_unit(text: str, config: PretrainConfig) -> str:
    """`text` in max_duration's unit where one is batches and the other samples (Composer's
    warmup schedulers need the two in one unit); otherwise as written."""
    time, run = Time.from_timestring(text), Time.from_timestring(config.max_duration)
    batch = config.global_train_batch_size
    if time.unit is TimeUnit.BATCH and run.unit is TimeUnit.SAMPLE:
        return f"{int(time.value) * batch}sp"
    if time.unit is TimeUnit.SAMPLE and run.unit is TimeUnit.BATCH:
        return f"{math.ceil(time.value / batch)}ba"
    return text


def build_scheduler(config: PretrainConfig) -> ComposerScheduler:
    """The recipe's schedule, its times in max_duration's unit."""
    section = config.scheduler
    t_warmup = in_run_unit(section.t_warmup, config)
    if section.name is SchedulerName.cosine_with_warmup:
        return CosineAnnealingWithWarmupScheduler(t_warmup=t_warmup, alpha_f=section.alpha_f)
    if section.name is SchedulerName.warmup_stable_decay:
        return WarmupStableDecayScheduler(
            t_warmup,
            in_run_unit(section.t_decay or DEFAULT_T_DECAY, config),
            section.alpha_f,
            section.decay_shape or DEFAULT_DECAY_SHAPE,
        )
    return LinearWithWarmupScheduler(t_warmup=t_warmup, alpha_f=section.alpha_f)


def stable_checkpoints(config: PretrainConfig) -> list[StableCheckpoint]:
    """The callback keeping a WSD run's checkpoint at the end of its stable phase."""
    section = config.scheduler
    if section.name is not SchedulerName.warmup_stable_decay or config.save_folder is None:
        return []
    if not section.keep_stable_checkpoint:
        return []
    folder = run_folder(config)
    t_decay = in_run_unit(section.t_decay or DEFAULT_T_DECAY, config)
    return [StableCheckpoint(folder, t_decay, config.max_duration, folder / RESOLVED_CONFIG)]
