"""Load a recipe: YAML + `key=value` overrides, merged into the typed schema at every depth.

An unknown key (with omegaconf's "did you mean"), a wrong type, a bad choice, a missing required
key or an impossible combination becomes one `ConfigError` line naming the dotted key, before
anything is built.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from mosaic_pretrain.config.schema import PretrainConfig
from mosaic_pretrain.errors import ConfigError

TIME_UNITS = ("ba", "sp", "tok", "ep")
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ba|sp|tok|ep|dur)\s*$")


@dataclass(frozen=True)
class Duration:
    """A Composer time string, parsed: `3500ba` -> Duration(3500, "ba")."""

    value: float
    unit: str


def parse_time(key: str, text: str, allow_fraction_of_run: bool = False) -> Duration:
    match = _TIME.match(str(text))
    units = (*TIME_UNITS, "dur") if allow_fraction_of_run else TIME_UNITS
    if not match or match.group(2) not in units:
        raise ConfigError(
            f"{key}: {text!r} is not a time; write a number and one of {', '.join(units)} "
            "(e.g. 2000ba)"
        )
    value, unit = float(match.group(1)), match.group(2)
    if unit != "dur" and not value.is_integer():
        raise ConfigError(f"{key}: {text!r} must be a whole number of {unit}")
    return Duration(value, unit)


def _describe(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None) or "?"
    message = str(getattr(error, "msg", None) or error).strip().splitlines()[0]
    if isinstance(error, ConfigKeyError):
        return f"unknown key {key!r}: {message}"
    if isinstance(error, MissingMandatoryValue):
        return f"missing required key {key!r}: set it in the recipe or as {key}=VALUE"
    if isinstance(error, InterpolationResolutionError):
        return f"{key}: cannot resolve an interpolation ({message})"
    return f"{key}: {message}"


def _load_yaml(path: Path):
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(f"recipe {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(loaded, dict) and not OmegaConf.is_dict(loaded):
        raise ConfigError(f"recipe {path} must be a mapping of keys to values")
    return loaded


def _parse_overrides(overrides: list[str]):
    for override in overrides:
        if "=" not in override or not override.split("=", 1)[0].strip():
            raise ConfigError(f"override {override!r} is not key=value (e.g. optimizer.lr=1e-4)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as error:
        raise ConfigError(f"overrides: {_describe(error)}") from None
    except yaml.YAMLError as error:  # the value part is YAML: `key={a:1}` lacks a space
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(
            f"overrides: a value is not valid YAML ({problem}); quote it, and write mappings "
            "with a space after each colon, e.g. key='{a: 1}'"
        ) from None


def load_structured(schema: type, path: str | Path, overrides: list[str] = ()):
    """The YAML file at `path` with `overrides`, merged into the dataclass `schema` at every
    depth: unknown keys, wrong types and missing required keys are one-line `ConfigError`s."""
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(schema), _load_yaml(Path(path)), _parse_overrides(list(overrides))
        )
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:  # unknown key, wrong type, missing value, ...
        raise ConfigError(_describe(error)) from None


def load_config(path: str | Path, overrides: list[str] = (), world_size: int = 1) -> PretrainConfig:
    """The validated recipe at `path` with `overrides` applied, for `world_size` devices."""
    config = load_structured(PretrainConfig, path, overrides)
    validate(config, world_size)
    return config


def validate(config: PretrainConfig, world_size: int = 1) -> None:
    """Cross-key checks the types cannot express; every problem found, in one line."""
    problems = []

    def check(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    try:
        duration = parse_time("max_duration", config.max_duration)
        for key in ("eval_interval", "save_interval", "console_log_interval"):
            parse_time(key, getattr(config, key))
        warmup = parse_time(
            "scheduler.t_warmup", config.scheduler.t_warmup, allow_fraction_of_run=True
        )
    except ConfigError as error:
        problems.append(str(error))
        duration = warmup = None
    check(
        config.console_log_interval.endswith("ba"),
        f"console_log_interval={config.console_log_interval}: the console logs every N batches; "
        "write it in ba, e.g. 10ba",
    )
    if duration is not None and warmup is not None:
        check(
            _warmup_fits(warmup, duration, config.global_train_batch_size),
            f"scheduler.t_warmup={config.scheduler.t_warmup} is not shorter than "
            f"max_duration={config.max_duration}",
        )

    microbatch = config.device_train_microbatch_size
    if isinstance(microbatch, str):
        check(
            microbatch == "auto",
            f"device_train_microbatch_size={microbatch!r}: a positive integer or auto",
        )
    else:
        check(microbatch > 0, "device_train_microbatch_size must be positive")
    check(config.global_train_batch_size > 0, "global_train_batch_size must be positive")
    if config.global_train_batch_size > 0 and isinstance(microbatch, int) and microbatch > 0:
        per_device, remainder = divmod(config.global_train_batch_size, world_size)
        check(
            remainder == 0 and per_device % microbatch == 0,
            f"global_train_batch_size={config.global_train_batch_size} is not divisible by "
            f"world size {world_size} x device_train_microbatch_size={microbatch}",
        )
    check(config.device_eval_batch_size > 0, "device_eval_batch_size must be positive")
    check(0.0 < config.mlm_probability < 1.0, "mlm_probability must be in (0, 1)")
    check(config.max_seq_len > 2, "max_seq_len must be at least 3 (two special tokens + text)")
    check(config.optimizer.lr > 0, "optimizer.lr must be positive")
    check(
        len(config.optimizer.betas) == 2 and all(0 <= b < 1 for b in config.optimizer.betas),
        f"optimizer.betas must be two numbers in [0, 1), got {config.optimizer.betas}",
    )
    check(config.optimizer.eps > 0, "optimizer.eps must be positive")
    check(config.optimizer.weight_decay >= 0, "optimizer.weight_decay must not be negative")
    check(0.0 <= config.scheduler.alpha_f <= 1.0, "scheduler.alpha_f must be in [0, 1]")
    check(
        config.save_num_checkpoints_to_keep == -1 or config.save_num_checkpoints_to_keep > 0,
        "save_num_checkpoints_to_keep must be positive, or -1 to keep all",
    )
    check(
        not config.autoresume or config.save_folder,
        "autoresume: true needs a save_folder to find checkpoints in",
    )
    for name in ("train_loader", "eval_loader"):
        loader = getattr(config, name)
        if loader is not None:
            check(loader.num_workers >= 0, f"{name}.num_workers must not be negative")
            check(
                not (loader.dataset.packing and config.model.name.value == "hf_bert"),
                f"{name}.dataset.packing needs model.name=mosaic_bert (BERT's attention "
                "would let packed documents see each other)",
            )
            problems += _stream_problems(name, loader.dataset)
            probability = loader.dataset.mlm_probability
            check(
                probability is None or 0.0 < probability < 1.0,
                f"{name}.dataset.mlm_probability must be in (0, 1)",
            )
    top_level = set(vars(config))
    for key in config.resume_allow_changes:
        check(
            key.split(".")[0] in top_level,
            f"resume_allow_changes: {key!r} is not a recipe key (write dotted keys, e.g. "
            "optimizer.lr)",
        )
    guard = config.loss_guard
    check(
        guard.spike_factor is None or guard.spike_factor > 1.0,
        "loss_guard.spike_factor must be above 1 (e.g. 3.0), or null to turn spikes off",
    )
    check(guard.window >= 1, "loss_guard.window must be at least 1")
    check(guard.max_skipped_batches >= 0, "loss_guard.max_skipped_batches must not be negative")
    check(
        config.eval_subset_num_batches == -1 or config.eval_subset_num_batches > 0,
        "eval_subset_num_batches must be positive, or -1 for the whole eval set",
    )
    check(
        config.callbacks.gate_range_monitor.batch_log_interval >= 1,
        "callbacks.gate_range_monitor.batch_log_interval must be at least 1",
    )
    check(
        not (config.export_with_code and config.model.name.value == "hf_bert"),
        "export_with_code applies to mosaic_bert only (transformers loads hf_bert's BERT export "
        "without code); remove it",
    )
    problems += _model_problems(config)
    problems += _scheduler_problems(config, duration)
    problems += _position_table_problems(config)
    problems += _glue_sweep_problems(config, world_size)
    if problems:
        raise ConfigError("; ".join(problems), problems)


def _warmup_fits(warmup: Duration, duration: Duration, global_batch: int) -> bool:
    if warmup.unit == "dur":
        return warmup.value < 1.0
    if warmup.unit == duration.unit:
        return warmup.value < duration.value
    samples_per = {"ba": global_batch, "sp": 1}
    if warmup.unit in samples_per and duration.unit in samples_per:
        return warmup.value * samples_per[warmup.unit] < duration.value * samples_per[duration.unit]
    return True  # epochs or tokens against another unit: known only once the data is open


def _stream_problems(name: str, dataset) -> list[str]:
    key = f"{name}.dataset"
    if dataset.streams is None:
        return [] if dataset.local else [f"{key}.local: set an MDS folder (or {key}.streams)"]
    if dataset.local or dataset.remote:
        return [f"{key}: set local/remote or streams, not both (each stream has its own)"]
    if dataset.convert_builtin_corpus:
        return [
            f"{key}.convert_builtin_corpus converts into local, which streams replace; set it "
            "to false (convert the shipped corpus with `mosaic-pretrain convert --out DIR`)"
        ]
    if not dataset.streams:
        return [f"{key}.streams is empty; name at least one stream, or set {key}.local"]
    problems = []
    for stream_name, stream in dataset.streams.items():
        where = f"{key}.streams.{stream_name}"
        given = [k for k in ("proportion", "repeat", "choose") if getattr(stream, k) is not None]
        if len(given) > 1:
            problems.append(f"{where}: set one of proportion, repeat and choose, not {given}")
        for weight in given:
            if getattr(stream, weight) <= 0:
                problems.append(f"{where}.{weight} must be positive")
    relative = [name for name, stream in dataset.streams.items() if stream.proportion is not None]
    if relative and len(relative) != len(dataset.streams):
        others = sorted(set(dataset.streams) - set(relative))
        problems.append(
            f"{key}.streams: proportion is relative, so every stream needs one or none does "
            f"({', '.join(relative)} set it, {', '.join(others)} do not); repeat and choose "
            "are the absolute weights"
        )
    return problems


def run_share(time: Duration, duration: Duration, global_batch: int) -> float | None:
    """`time` as a fraction of `duration` (batches and samples convert through the global
    batch); None where that is known only once the data is read (epochs, tokens)."""
    if time.unit == "dur":
        return time.value
    if time.unit == duration.unit:
        return time.value / duration.value
    samples_per = {"ba": global_batch, "sp": 1}
    if time.unit in samples_per and duration.unit in samples_per:
        return (time.value * samples_per[time.unit]) / (duration.value * samples_per[duration.unit])
    return None


def _scheduler_problems(config: PretrainConfig, duration: Duration | None) -> list[str]:
    """Times the schedule can place in the run; warmup_stable_decay's keys set for it only, its
    decay after its warmup and within the run."""
    section = config.scheduler
    wsd = section.name.value == "warmup_stable_decay"
    if not wsd:
        problems = [
            f"scheduler.{key} applies to scheduler.name=warmup_stable_decay only; remove it"
            for key in ("t_decay", "decay_shape")
            if getattr(section, key) is not None
        ]
    else:
        problems = []
    if duration is None:
        return problems  # max_duration's own error is reported
    try:
        warmup = parse_time("scheduler.t_warmup", section.t_warmup, allow_fraction_of_run=True)
    except ConfigError:
        return problems  # reported with the other times
    batch = config.global_train_batch_size
    if "tok" in (warmup.unit, duration.unit) and warmup.unit not in ("dur", duration.unit):
        problems.append(
            f"scheduler.t_warmup={section.t_warmup} cannot be placed in max_duration="
            f"{config.max_duration} before the data is read; write it in dur or "
            f"{duration.unit}"
        )
    if not wsd:
        return problems
    if duration.unit == "ep":
        return [
            *problems,
            f"scheduler.name=warmup_stable_decay decays over the end of max_duration, which "
            f"must be in ba, sp or tok (not {config.max_duration})",
        ]
    t_decay = section.t_decay or "0.2dur"
    try:
        decay = parse_time("scheduler.t_decay", t_decay, allow_fraction_of_run=True)
    except ConfigError as error:
        return [*problems, str(error)]
    share, warmup_share = run_share(decay, duration, batch), run_share(warmup, duration, batch)
    if share is None:
        return [
            *problems,
            f"scheduler.t_decay={t_decay}: write it in dur (a fraction of the run) or in "
            f"max_duration's unit ({duration.unit})",
        ]
    if warmup_share is None:
        return [
            *problems,
            f"scheduler.t_warmup={section.t_warmup}: warmup_stable_decay places it in "
            f"max_duration={config.max_duration}; write it in dur or {duration.unit}",
        ]
    if share * duration.value < 1:
        problems.append(
            f"scheduler.t_decay={t_decay} is less than one {duration.unit} of "
            f"max_duration={config.max_duration}: the run would never decay"
        )
    elif share >= 1.0:
        problems.append(
            f"scheduler.t_decay={t_decay} covers the whole run (max_duration="
            f"{config.max_duration}): there is no stable phase; shorten it, or use "
            "scheduler.name=linear_decay_with_warmup"
        )
    elif warmup_share + share > 1.0:
        problems.append(
            f"scheduler.t_warmup={section.t_warmup} and scheduler.t_decay={t_decay} add up to "
            f"more than max_duration={config.max_duration}: the stable phase would be negative"
        )
    return problems


def _position_table_problems(config: PretrainConfig) -> list[str]:
    """hf_bert learns one embedding per position, up to its table's size; ALiBi has no table."""
    from mosaic_pretrain.model.hf_baseline import BERT_MAX_POSITIONS

    if config.model.name.value != "hf_bert":
        return []
    lengths = {"max_seq_len": config.max_seq_len}
    for name in ("train_loader", "eval_loader"):
        loader = getattr(config, name)
        if loader is not None and loader.dataset.max_seq_len is not None:
            lengths[f"{name}.dataset.max_seq_len"] = loader.dataset.max_seq_len
    return [
        f"{key}={length} is past hf_bert's {BERT_MAX_POSITIONS}-position table (BERT learns "
        f"one embedding per position); use at most {BERT_MAX_POSITIONS}, or model.name="
        "mosaic_bert, whose ALiBi has no table"
        for key, length in lengths.items()
        if length > BERT_MAX_POSITIONS
    ]


def _model_problems(config: PretrainConfig) -> list[str]:
    from mosaic_pretrain.model.configuration import PRESETS, MosaicBertConfig

    model_config = config.model.model_config
    if config.model.use_pretrained:
        if config.model.name.value != "hf_bert":
            return [
                "model.use_pretrained is MosaicML's hf_bert key; to start mosaic_bert from "
                "weights set model.init_from=DIR (a directory of mosaic-pretrain export or import)"
            ]
        if config.model.init_from is not None:
            return ["set model.init_from or model.use_pretrained, not both"]
        if config.model.pretrained_model_name is None:
            return ["model.use_pretrained needs model.pretrained_model_name (the weights' name)"]
    if config.model.init_optimizer_state and config.model.init_from is None:
        return [
            "model.init_optimizer_state takes the optimizer's state of model.init_from's "
            "checkpoint; set model.init_from to an earlier run's checkpoint or save_folder"
        ]
    if config.model.name.value == "hf_bert":
        feed_forward = [
            key for key in ("ffn_activation", "ffn_param_matched")
            if getattr(model_config, key) is not None
        ]  # fmt: skip
        if feed_forward:
            return [
                f"model.model_config.{feed_forward[0]} applies to model.name=mosaic_bert only "
                "(hf_bert is BERT with its own GELU MLP); remove it or use mosaic_bert"
            ]
    if model_config.preset not in PRESETS:
        return [
            f"model.model_config.preset={model_config.preset!r} is unknown; choose one of "
            f"{', '.join(PRESETS)}"
        ]
    try:
        MosaicBertConfig.from_preset(model_config.preset, **model_config.overrides())
    except ConfigError as error:
        return [f"model.model_config: {str(error).removeprefix('MosaicBertConfig: ')}"]
    return []


# Units a GLUE point interval may use: points are taken at batch ends.
GLUE_POINT_UNITS = ("ba", "sp", "tok")


def _glue_sweep_problems(config: PretrainConfig, world_size: int) -> list[str]:
    """The callbacks.glue_sweep keys alone; the sweep file and the GPUs are checked by
    `mosaic-pretrain check` (and before training)."""
    section = config.callbacks.glue_sweep
    if section is None:
        return []
    key = "callbacks.glue_sweep"
    problems = []
    if section.interval is not None:
        try:
            interval = parse_time(f"{key}.interval", section.interval)
        except ConfigError as error:
            problems.append(str(error))
        else:
            if interval.unit not in GLUE_POINT_UNITS or interval.value <= 0:
                problems.append(
                    f"{key}.interval={section.interval!r}: write a positive number of "
                    f"{', '.join(GLUE_POINT_UNITS)} (points are taken at batch ends)"
                )
    elif not section.at_end:
        problems.append(f"{key}: set interval (e.g. 2000ba) or at_end: true, or no point is taken")
    if section.retries < 0:
        problems.append(f"{key}.retries must not be negative")
    if section.gpu_hour_price is not None and section.gpu_hour_price < 0:
        problems.append(f"{key}.gpu_hour_price must not be negative (or null: no cost)")
    if any(gpu < 0 for gpu in section.gpus) or len(set(section.gpus)) != len(section.gpus):
        problems.append(f"{key}.gpus={section.gpus}: list distinct GPU ids (0, 1, ...)")
    if world_size > 1 and (section.wait_for_sweeps or not section.gpus):
        problems.append(
            f"{key}: with {world_size} processes the sweeps need GPUs of their own "
            "(callbacks.glue_sweep.gpus) and wait_for_sweeps: false; the other ranks would time "
            "out waiting for rank 0"
        )
    return problems


def to_yaml(config) -> str:
    """A resolved recipe (any schema dataclass), as saved beside its results."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
