"""The typed schema of a GLUE sweep YAML, the published per-task defaults, and its checks.

A sweep finetunes one starting point on a set of tasks, each with several seeds. Per-task
hyperparameters default to MosaicBERT's published GLUE settings (`TASK_DEFAULTS`); the YAML
overrides any of them under `task_settings.TASK`. A task of your own in the GLUE TSV layout is
declared under `custom_tasks` and needs no code.
"""

from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path

from mosaic_pretrain.config.load import load_structured
from mosaic_pretrain.config.schema import AT_LEAST_ONE, BATCH_ROWS, SEQ_LEN, FolderLockSection
from mosaic_pretrain.data.glue_tasks import (
    CLASSIFICATION_METRICS,
    GLUE_TASKS,
    REGRESSION_METRICS,
    TaskSpec,
)
from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.ranges import (
    PATH,
    SEED,
    Items,
    Range,
    TimeRange,
    name_problems,
    range_problems,
    range_warnings,
    ranged,
    template_problems,
)

# `start_from` value meaning "the sweep's starting point" rather than another task's result.
PRETRAINED = "pretrained"
SEEDS_5 = (19, 8364, 717, 10536, 90166)


@dataclass(frozen=True)
class TaskHyperparameters:
    """Everything that decides one task's finetuning runs."""

    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    seeds: tuple[int, ...]
    eval_interval: str  # Composer time string; evaluation also runs at the end
    start_from: str = PRETRAINED  # or the name of a task whose finetuned encoder to start from
    max_train_examples: int | None = None  # a seeded subset, for quick runs
    max_eval_examples: int | None = None


# MosaicBERT's published GLUE settings (the MosaicBERT benchmark code and its base YAML):
# decoupled AdamW with these learning rates and weight decays; RTE, MRPC and STS-B start from the
# finetuned MNLI encoder.
TASK_DEFAULTS: dict[str, TaskHyperparameters] = {
    "mnli": TaskHyperparameters(5.0e-5, 5.0e-6, 3, 48, (19,), "2300ba"),
    "qnli": TaskHyperparameters(1.0e-5, 1.0e-6, 10, 16, (19,), "1000ba"),
    "qqp": TaskHyperparameters(3.0e-5, 3.0e-6, 5, 16, (19,), "2000ba"),
    "sst2": TaskHyperparameters(3.0e-5, 3.0e-6, 3, 16, SEEDS_5[:3], "500ba"),
    "cola": TaskHyperparameters(5.0e-5, 5.0e-6, 10, 32, SEEDS_5[:4], "250ba"),
    "stsb": TaskHyperparameters(3.0e-5, 3.0e-6, 10, 32, SEEDS_5, "200ba", start_from="mnli"),
    "mrpc": TaskHyperparameters(8.0e-5, 8.0e-6, 10, 32, SEEDS_5, "100ba", start_from="mnli"),
    "rte": TaskHyperparameters(1.0e-5, 1.0e-5, 3, 16, SEEDS_5, "100ba", start_from="mnli"),
}
# A custom task starts from these unless its task_settings say otherwise.
CUSTOM_TASK_DEFAULTS = TaskHyperparameters(3.0e-5, 3.0e-6, 3, 32, (19,), "1ep")


class DataSource(str, Enum):
    local = "local"  # a folder of GLUE-layout TSV files (works offline)
    hub = "hub"  # the Hugging Face hub dataset (nyu-mll/glue)


class ScorePolicy(str, Enum):
    last = "last"  # the evaluation at the end of training (MosaicBERT's choice)
    best = "best"  # the evaluation with the best primary metric (optimistic)


class DeviceChoice(str, Enum):
    auto = "auto"  # every visible GPU, else the CPU
    gpu = "gpu"
    cpu = "cpu"


class GluePrecision(str, Enum):
    auto = "auto"  # amp_bf16 on a GPU, fp32 on the CPU
    fp32 = "fp32"
    amp_bf16 = "amp_bf16"
    amp_fp16 = "amp_fp16"


@dataclass
class TaskSettings:
    """Overrides for one task; unset (null) fields keep the task's default."""

    # The published finetuning rates are 1e-5 to 8e-5.
    lr: float | None = ranged(
        None,
        Range(
            0, 1, low_open=True, warn_above=1e-3,
            warning="far above the published GLUE rates (1e-5 to 8e-5); expect divergence",
        ),
    )  # fmt: skip
    # Decoupled, as in pretraining: 1 or more would zero or flip the weights.
    weight_decay: float | None = ranged(None, Range(0, 1, high_open=True))
    epochs: int | None = ranged(None, Range(1, 10_000))
    batch_size: int | None = ranged(None, BATCH_ROWS)
    seeds: list[int] | None = ranged(None, Items(SEED))
    eval_interval: str | None = ranged(None, TimeRange())  # e.g. 500ba or 1ep
    start_from: str | None = None  # `pretrained`, or a task in the sweep (e.g. mnli)
    max_train_examples: int | None = ranged(None, AT_LEAST_ONE)
    max_eval_examples: int | None = ranged(None, AT_LEAST_ONE)


@dataclass
class CustomTaskSection:
    """A task of your own, in the GLUE TSV layout (one folder with a train and dev file)."""

    text_columns: list[str] = "???"  # one column (single sentence) or two (sentence pair)
    label_column: str = "???"
    # Class names in id order (as written in the file); null for a one-output regression.
    labels: list[str] | None = None
    metrics: list[str] | None = None  # default: accuracy, or pearson + spearman for regression
    folder: str | None = ranged(
        None, PATH
    )  # under data.local, or absolute; default: the task's name
    train_file: str = ranged("train.tsv", PATH)
    dev_file: str = ranged("dev.tsv", PATH)
    header: bool = True  # false: columns are 0-based positions


@dataclass
class DataSection:
    source: DataSource = DataSource.local
    local: str | None = ranged(
        None, PATH
    )  # folder holding CoLA/, SST-2/, MRPC/, ... (and custom tasks)
    hub_name: str = "nyu-mll/glue"


@dataclass
class ParallelSection:
    device: DeviceChoice = DeviceChoice.auto
    # Jobs at once: default one per GPU, or 1 on the CPU. On the CPU they share the cores.
    workers: int | None = ranged(None, Range(1, 256))
    gpus: list[int] | None = ranged(None, Items(Range(0, 1023)))  # GPU ids; default: all visible


@dataclass
class SweepConfig:
    """A GLUE sweep. `???` marks a key the YAML must set."""

    run_name: str = ranged("???", PATH)
    # A Composer checkpoint from `train` (its resolved_config.yaml beside it, or `recipe`), that
    # run's save folder (its latest checkpoint), an exported Hugging Face directory, or a hub
    # model name such as bert-base-uncased.
    starting_point: str = ranged("???", PATH)
    recipe: str | None = ranged(
        None, PATH
    )  # the pretraining recipe of a Composer checkpoint, if not beside it
    tokenizer_name: str | None = ranged(None, PATH)  # default: the starting point's own tokenizer
    output_folder: str = ranged("runs/glue/{run_name}", PATH)
    tasks: list[str] = field(default_factory=lambda: list(GLUE_TASKS))
    task_settings: dict[str, TaskSettings] = field(default_factory=dict)
    custom_tasks: dict[str, CustomTaskSection] = field(default_factory=dict)
    data: DataSection = field(default_factory=DataSection)
    # longer pairs are truncated, longest sentence first
    max_seq_len: int = ranged(256, SEQ_LEN)
    eval_batch_size: int = ranged(128, BATCH_ROWS)
    precision: GluePrecision = GluePrecision.auto
    score_policy: ScorePolicy = ScorePolicy.last
    parallel: ParallelSection = field(default_factory=ParallelSection)
    # The sweep's lock on output_folder, as a pretraining run's on its save folder.
    folder_lock: FolderLockSection = field(default_factory=FolderLockSection)

    def folder(self) -> Path:
        return Path(self.output_folder.format(run_name=self.run_name))


def load_sweep(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    config = load_structured(SweepConfig, path, overrides)
    validate_sweep(config)
    return config


def custom_task_spec(name: str, section: CustomTaskSection) -> TaskSpec:
    regression = section.labels is None
    default_metrics = REGRESSION_METRICS if regression else ("accuracy",)
    return TaskSpec(
        name=name,
        folder=section.folder or name,
        text_columns=tuple(section.text_columns),
        label_column=section.label_column,
        labels=None if regression else tuple(section.labels),
        metrics=tuple(section.metrics or default_metrics),
        dev_files=(("dev", section.dev_file),),
        train_file=section.train_file,
        header=section.header,
    )


def task_specs(config: SweepConfig) -> dict[str, TaskSpec]:
    """Every task the sweep runs, in the order of `tasks`."""
    return {
        name: GLUE_TASKS[name]
        if name in GLUE_TASKS
        else custom_task_spec(name, config.custom_tasks[name])
        for name in config.tasks
    }


def hyperparameters(config: SweepConfig, task: str) -> TaskHyperparameters:
    base = TASK_DEFAULTS.get(task, CUSTOM_TASK_DEFAULTS)
    settings = config.task_settings.get(task, TaskSettings())
    changed = {
        item.name: getattr(settings, item.name)
        for item in fields(settings)
        if getattr(settings, item.name) is not None
    }
    if "seeds" in changed:
        changed["seeds"] = tuple(changed["seeds"])
    return replace(base, **changed)


def validate_sweep(config: SweepConfig) -> None:
    """Every problem the YAML alone shows, in one line; data and checkpoints are checked later."""
    problems: list[str] = range_problems(config) + name_problems("run_name", config.run_name)
    problems += template_problems("output_folder", config.output_folder)
    known = [*GLUE_TASKS, *config.custom_tasks]
    for name in config.custom_tasks:
        if name in GLUE_TASKS:
            problems.append(f"custom_tasks.{name}: {name} is a GLUE task; give yours another name")
        else:
            problems += _custom_task_problems(name, config.custom_tasks[name])
    for name in [*config.tasks, *config.task_settings]:
        if name not in known:
            problems.append(
                f"unknown task {name!r}; choose from {', '.join(known)}, or declare it under "
                "custom_tasks"
            )
    if not config.tasks:
        problems.append("tasks is empty; list at least one task")
    if len(set(config.tasks)) != len(config.tasks):
        problems.append(f"tasks lists a task twice: {config.tasks}")
    if problems:
        raise ConfigError("; ".join(problems), problems)
    for task in config.tasks:
        problems += _hyperparameter_problems(config, task)
    if config.data.source is DataSource.local and config.data.local is None:
        problems.append("data.local must name a folder of GLUE TSV files when data.source=local")
    if config.data.source is DataSource.hub and config.data.local is None:
        problems += [
            f"custom task {name} is read from disk: set data.local (or an absolute folder)"
            for name in config.tasks
            if name in config.custom_tasks
            and not Path(config.custom_tasks[name].folder or name).is_absolute()
        ]
    if problems:
        raise ConfigError("; ".join(problems), problems)


def sweep_warnings(config: SweepConfig) -> list[str]:
    """Legal values worth a look before the sweep spends compute."""
    return range_warnings(config)


def _custom_task_problems(name: str, section: CustomTaskSection) -> list[str]:
    key = f"custom_tasks.{name}"
    problems = []
    if not 1 <= len(section.text_columns) <= 2:
        problems.append(f"{key}.text_columns must name one column (single sentence) or two (pair)")
    if section.labels is not None and len(set(section.labels)) < 2:
        problems.append(f"{key}.labels must list at least two distinct classes, or be null")
    allowed = REGRESSION_METRICS if section.labels is None else CLASSIFICATION_METRICS
    kind = "regression" if section.labels is None else "classification"
    for metric in section.metrics or ():
        if metric not in allowed:
            problems.append(
                f"{key}.metrics: {metric!r} does not apply to {kind}; choose from "
                f"{', '.join(allowed)}"
            )
    if section.metrics is not None and not section.metrics:
        problems.append(f"{key}.metrics is empty; list at least one or leave it unset")
    if section.labels is not None and len(section.labels) != 2 and "f1" in (section.metrics or ()):
        problems.append(f"{key}.metrics: f1 needs exactly two labels (positive = the second)")
    if not section.header:
        columns = [*section.text_columns, section.label_column]
        problems += [
            f"{key}: column {column!r} must be a 0-based position, as header is false"
            for column in columns
            if not column.isdigit()
        ]
    return problems


def _hyperparameter_problems(config: SweepConfig, task: str) -> list[str]:
    key = f"task_settings.{task}"
    settings = hyperparameters(config, task)
    problems = []
    if not settings.seeds:
        problems.append(f"{key}.seeds must list at least one seed")
    elif len(set(settings.seeds)) != len(settings.seeds):
        problems.append(f"{key}.seeds lists a seed twice: {list(settings.seeds)}")
    start = settings.start_from
    if start != PRETRAINED:
        if start == task:
            problems.append(f"{key}.start_from: a task cannot start from itself")
        elif start not in config.tasks:
            problems.append(
                f"{key}.start_from={start!r}: {task} starts from the finetuned {start} encoder, "
                f"but {start} is not in tasks; add it to tasks or set "
                f"task_settings.{task}.start_from={PRETRAINED}"
            )
        elif hyperparameters(config, start).start_from != PRETRAINED:
            problems.append(
                f"{key}.start_from={start!r}: {start} itself starts from another task; "
                "chains are one step deep"
            )
    return problems
