"""Load a recipe: YAML + `key=value` overrides, merged into the typed schema at every depth.

An unknown key (with omegaconf's "did you mean"), a wrong type, a bad choice, a missing required
key or an impossible combination becomes one `ConfigError` line naming the dotted key, before
anything is built.
"""

import types
import typing
from dataclasses import fields, is_dataclass
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
from mosaic_pretrain.errors import ConfigError, first_line
from mosaic_pretrain.ranges import (
    Duration,
    name_problems,
    parse_time,
    range_problems,
    range_warnings,
    template_problems,
)


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
    structured = OmegaConf.structured(schema)
    layers = [_load_yaml(Path(path)), _parse_overrides(list(overrides))]
    try:
        merged = OmegaConf.merge(structured, *layers)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:  # unknown key, wrong type, missing value, ...
        if getattr(error, "full_key", None):
            raise ConfigError(_describe(error)) from None
        raise ConfigError(_container_clash(schema, layers, error)) from None
    except TypeError as error:  # omegaconf's own: a mapping merged into a list, or the reverse
        raise ConfigError(_container_clash(schema, layers, error)) from None


def _container_clash(schema: type, layers, error: Exception) -> str:
    """Which key holds a mapping where the schema has a list or a value (or the reverse):
    omegaconf's TypeError does not say."""
    for layer in layers:
        found = _first_clash(schema, layer, "")
        if found is not None:
            key, expected, given = found
            example = {"a list": "[a, b]", "a mapping": "{key: value}"}.get(expected, "")
            write = f"; write {expected} ({example})" if example else f"; write {expected}"
            return f"{key}: {given} where the recipe expects {expected}{write}"
    return f"a mapping, a list and a value are mixed up in the recipe ({first_line(error)})"


def _kind(annotation) -> tuple[str, object]:
    """What a schema annotation holds: a mapping (with the dataclass of its sections, or of
    its values for dict[str, X]), a list, or a single value."""
    if is_dataclass(annotation):
        return "a mapping", annotation
    origin = typing.get_origin(annotation)
    if origin is list:
        return "a list", None
    if origin is dict:
        values = typing.get_args(annotation)[1:]
        return "a mapping", ("each", values[0] if values and is_dataclass(values[0]) else None)
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(arguments) == 1:
        return _kind(arguments[0])
    return "a value", None


def _node_kind(node) -> str:
    return (
        "a mapping"
        if OmegaConf.is_dict(node)
        else "a list"
        if OmegaConf.is_list(node)
        else "a value"
    )


def _first_clash(schema: type, given, prefix: str) -> tuple[str, str, str] | None:
    """(dotted key, what the schema expects, what is given) of the first container mismatch
    in one layer of the recipe (the YAML file, or the overrides)."""
    if not OmegaConf.is_dict(given) or given._is_none():
        return None
    annotations = {item.name: item.type for item in fields(schema)}
    for key in given:
        if key not in annotations:
            continue  # omegaconf names an unknown key itself
        expected, inner = _kind(annotations[key])
        node, dotted = given._get_node(key), f"{prefix}{key}"
        have = _node_kind(node)
        if node._is_none() or have == expected or (expected == "a value" and have != "a list"):
            found = None
            if have == "a mapping" and is_dataclass(inner):
                found = _first_clash(inner, node, f"{dotted}.")
            elif have == "a mapping" and isinstance(inner, tuple) and inner[1] is not None:
                found = _first_section_clash(inner[1], node, dotted)
            if found is not None:
                return found
            continue
        return dotted, expected, have
    return None


def _first_section_clash(section: type, mapping, prefix: str) -> tuple[str, str, str] | None:
    """The same in a mapping of named sections (a dataset's streams)."""
    for name in mapping:
        node = mapping._get_node(name)
        if not node._is_none() and _node_kind(node) != "a mapping":
            return f"{prefix}.{name}", "a mapping", _node_kind(node)
        found = _first_clash(section, node, f"{prefix}.{name}.")
        if found is not None:
            return found
    return None


def load_config(path: str | Path, overrides: list[str] = (), world_size: int = 1) -> PretrainConfig:
    """The validated recipe at `path` with `overrides` applied, for `world_size` devices."""
    config = load_structured(PretrainConfig, path, overrides)
    validate(config, world_size)
    return config


def validate(config: PretrainConfig, world_size: int = 1) -> None:
    """Each field within its valid values (the schema's `ranged` rules), then the cross-key
    checks the types cannot express; every problem found, in one line."""
    problems = range_problems(config) + name_problems("run_name", config.run_name)
    for key in ("save_folder", "export_folder"):
        problems += template_problems(key, getattr(config, key))
    if config.ablation is not None:
        problems += template_problems("ablation.output_folder", config.ablation.output_folder)

    def check(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    try:  # a time that does not parse is reported with the field ranges
        duration = parse_time("max_duration", config.max_duration)
        warmup = parse_time(
            "scheduler.t_warmup", config.scheduler.t_warmup, allow_fraction_of_run=True
        )
    except ConfigError:
        duration = warmup = None
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
    if config.global_train_batch_size > 0 and isinstance(microbatch, int) and microbatch > 0:
        per_device, remainder = divmod(config.global_train_batch_size, world_size)
        check(
            remainder == 0 and per_device % microbatch == 0,
            f"global_train_batch_size={config.global_train_batch_size} is not divisible by "
            f"world size {world_size} x device_train_microbatch_size={microbatch}",
        )
    problems += _token_index_problems(config, world_size)
    check(
        not config.autoresume or config.save_folder,
        "autoresume: true needs a save_folder to find checkpoints in",
    )
    for name in ("train_loader", "eval_loader"):
        loader = getattr(config, name)
        if loader is not None:
            check(
                not (loader.dataset.packing and config.model.name.value == "hf_bert"),
                f"{name}.dataset.packing needs model.name=mosaic_bert (BERT's attention "
                "would let packed documents see each other)",
            )
            problems += _stream_problems(name, loader.dataset)
    top_level = set(vars(config))
    for key in config.resume_allow_changes:
        check(
            key.split(".")[0] in top_level,
            f"resume_allow_changes: {key!r} is not a recipe key (write dotted keys, e.g. "
            "optimizer.lr)",
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


# The unpadding and attention kernels index a microbatch's tokens with int32 offsets.
INT32_TOKENS = 2**31 - 1


def _token_index_problems(config: PretrainConfig, world_size: int) -> list[str]:
    """A microbatch's token slots (rows x max_seq_len) must be countable in int32."""
    lengths = [config.max_seq_len] + [
        loader.dataset.max_seq_len
        for loader in (config.train_loader, config.eval_loader)
        if loader is not None and loader.dataset.max_seq_len is not None
    ]
    microbatch = config.device_train_microbatch_size
    rows = {
        "device_train_microbatch_size": (
            microbatch
            if isinstance(microbatch, int)
            else max(1, config.global_train_batch_size // max(1, world_size))
        ),
        "device_eval_batch_size": config.device_eval_batch_size,
    }
    return [
        f"{key}={count} rows x max_seq_len={max(lengths)} is {count * max(lengths):,} token "
        f"slots, past the {INT32_TOKENS:,} the attention kernels can index (int32); use "
        "smaller microbatches"
        for key, count in rows.items()
        if count * max(lengths) > INT32_TOKENS
    ]


def recipe_warnings(config: PretrainConfig) -> list[str]:
    """Legal values a user would want to hear about before compute is spent: a field's
    surprising value (0 checkpoints kept, a learning rate far above any recipe's), and an
    interval longer than the whole run."""
    warnings = range_warnings(config)
    try:
        duration = parse_time("max_duration", config.max_duration)
    except ConfigError:
        return warnings
    intervals = {
        "eval_interval": (
            "the model is evaluated only at the end of training",
            config.eval_loader is not None,
        ),
        "save_interval": ("the only checkpoint is the one at the end", config.save_folder),
        "console_log_interval": ("no progress line is printed before the end", True),
    }
    for key, (consequence, applies) in intervals.items():
        try:
            interval = parse_time(key, getattr(config, key))
        except ConfigError:
            continue
        share = run_share(interval, duration, config.global_train_batch_size)
        if applies and share is not None and share > 1.0:
            warnings.append(
                f"{key}={getattr(config, key)} is longer than max_duration={config.max_duration}: "
                f"{consequence}"
            )
    return warnings


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


def _glue_sweep_problems(config: PretrainConfig, world_size: int) -> list[str]:
    """The callbacks.glue_sweep keys alone; the sweep file and the GPUs are checked by
    `mosaic-pretrain check` (and before training)."""
    section = config.callbacks.glue_sweep
    if section is None:
        return []
    key = "callbacks.glue_sweep"
    problems = []
    if section.interval is None and not section.at_end:  # its units: the field ranges
        problems.append(f"{key}: set interval (e.g. 2000ba) or at_end: true, or no point is taken")
    if len(set(section.gpus)) != len(section.gpus):
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
